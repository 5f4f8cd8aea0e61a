package engine

// An audit event that carries a whole object also says what happened to that
// object, and who did it. ObjectFromAudit turns it into the object event the
// live watch would have produced, with the audit event kept beside it, so one
// object rule fires from both paths and a match from audit names the actor.

// auditOps maps the audit verbs that change an object to object event ops.
var auditOps = map[string]string{
	"create": "create",
	"update": "update",
	"patch":  "update",
	"delete": "delete",
}

// objectSubresources are the subresources whose request or response body is
// the parent object itself. Others (binding, eviction, scale, token, exec,
// ...) carry a different object that the live watch never reports.
var objectSubresources = map[string]bool{
	"":                    true,
	"status":              true,
	"ephemeralcontainers": true,
	"resize":              true,
	"approval":            true,
	"finalize":            true,
}

// ObjectFromAudit derives an object event from an audit event, or reports
// false when the audit event carries none. It derives one when the event is
// at stage ResponseComplete, the verb is create, update, patch or delete, the
// request succeeded (responseStatus.code 2xx, or no code recorded), and a
// whole object (kind and metadata) is in responseObject (RequestResponse
// level) or, for create and update, in requestObject (Request level; a patch
// body is not a whole object, a delete body is DeleteOptions). Denied or
// failed requests derive nothing: nothing happened to the object, and the
// attempt is for audit rules to judge.
//
// The object event has op create, update (patch too) or delete, the object,
// pod filled for Pods as the object source fills it, the node a Pod is bound
// to, the audit event's time, and audit: the request that did it (user,
// groups, sourceIPs, userAgent, impersonatedUser, the bound token's pod in
// user.extra). The object's namespace, name and uid come from objectRef where
// the body lacks them (a request body before the API server named it). The
// maps are shared with the audit event, not copied; neither may be changed.
func ObjectFromAudit(ev *Event) (Event, bool) {
	a := &ev.Audit
	if ev.Kind != KindAudit || a.Stage != "ResponseComplete" {
		return Event{}, false
	}
	op, ok := auditOps[a.Verb]
	if !ok || !objectSubresources[a.ObjectRef.Subresource] {
		return Event{}, false
	}
	if c := a.ResponseStatus.Code; c != 0 && (c < 200 || c > 299) {
		return Event{}, false
	}
	obj := wholeObject(a.ResponseObject)
	if obj == nil && (a.Verb == "create" || a.Verb == "update") {
		obj = wholeObject(a.RequestObject)
	}
	if obj == nil {
		return Event{}, false
	}
	obj = withIdentity(obj, &a.ObjectRef)
	out := Event{Kind: KindObject, Op: op, Time: ev.Time, Node: ev.Node, Audit: ev.Audit, Object: obj}
	if isPod(obj) {
		out.Pod = PodFromObject(obj)
		out.Node = out.Pod.Node
	}
	return out, true
}

// wholeObject returns m if it is a Kubernetes object (a kind other than
// Status, and metadata), else nil.
func wholeObject(m map[string]any) map[string]any {
	kind, _ := m["kind"].(string)
	if kind == "" || kind == "Status" {
		return nil
	}
	if _, ok := m["metadata"].(map[string]any); !ok {
		return nil
	}
	return m
}

// withIdentity fills metadata.namespace, name and uid from the audit
// objectRef where the object lacks them, copying the two maps it changes.
func withIdentity(obj map[string]any, ref *AuditObjectRef) map[string]any {
	md := obj["metadata"].(map[string]any)
	var missing [][2]string
	for _, f := range [][2]string{{"namespace", ref.Namespace}, {"name", ref.Name}, {"uid", ref.UID}} {
		if s, _ := md[f[0]].(string); s == "" && f[1] != "" {
			missing = append(missing, f)
		}
	}
	if len(missing) == 0 {
		return obj
	}
	md2 := make(map[string]any, len(md)+len(missing))
	for k, v := range md {
		md2[k] = v
	}
	for _, f := range missing {
		md2[f[0]] = f[1]
	}
	obj2 := make(map[string]any, len(obj))
	for k, v := range obj {
		obj2[k] = v
	}
	obj2["metadata"] = md2
	return obj2
}

func isPod(obj map[string]any) bool {
	kind, _ := obj["kind"].(string)
	av, _ := obj["apiVersion"].(string)
	return kind == "Pod" && (av == "v1" || av == "")
}
