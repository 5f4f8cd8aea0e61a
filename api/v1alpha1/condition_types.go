package v1alpha1

// Condition types and reasons shared by every riposte kind. Types follow
// kstatus: Ready=True means current, Stalled=True means failed (a retry will
// not fix it), Reconciling=True means in progress.
const (
	ReadyCondition       = "Ready"
	ReconcilingCondition = "Reconciling"
	StalledCondition     = "Stalled"

	// CompileFailedReason: the condition, an exception, the output or a
	// throttle key does not compile, or its estimated cost is over the limit.
	CompileFailedReason = "CompileFailed"
	// TestFailedReason: one of the rule's embedded tests failed.
	TestFailedReason = "TestFailed"
	// InvalidSpecReason: a field is invalid (for example an unknown source).
	InvalidSpecReason = "InvalidSpec"
	// PlaybookNotFoundReason: the rule names a playbook that does not exist.
	PlaybookNotFoundReason = "PlaybookNotFound"
	// LoadedReason: the rule compiled, passed its tests and is live.
	LoadedReason = "Loaded"
	// ProgressingReason: a new generation is being processed.
	ProgressingReason = "Progressing"
	// RolloutReason: the rule is valid and nodes are still loading it.
	RolloutReason = "RollingOut"
)
