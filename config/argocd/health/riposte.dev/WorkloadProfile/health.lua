-- Health of a WorkloadProfile: Healthy when Ready (reviewed, for the image
-- the workload runs); Degraded when Stale (the workload runs a new image and
-- the profile needs a new review); Progressing while it is learnt or waits
-- for review.
local hs = {}
if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the riposte controller"
  return hs
end
local ready, stale, learning = nil, nil, nil
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Ready" then ready = c end
  if c.type == "Stale" then stale = c end
  if c.type == "Learning" then learning = c end
end
if stale ~= nil and stale.status == "True" then
  hs.status = "Degraded"
  hs.message = stale.reason .. ": " .. (stale.message or "")
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or ""
  return hs
end
if learning ~= nil and learning.status == "True" then
  hs.status = "Progressing"
  hs.message = learning.reason .. ": " .. (learning.message or "")
  return hs
end
hs.status = "Progressing"
hs.message = "Waiting for review"
return hs
