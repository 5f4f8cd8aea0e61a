-- Health of an Incident from its response phase: a failed response is
-- Degraded, one waiting for approval Suspended, a running one Progressing.
local hs = {}
local phase = nil
if obj.status ~= nil then phase = obj.status.phase end
if phase == "Failed" then
  hs.status = "Degraded"
  hs.message = "Response failed"
elseif phase == "Responding" then
  hs.status = "Progressing"
  hs.message = "Response running"
elseif phase == "AwaitingApproval" then
  hs.status = "Suspended"
  hs.message = "A step waits for riposte.dev/approve=true"
else
  hs.status = "Healthy"
  hs.message = "Phase " .. (phase or "Open")
end
return hs
