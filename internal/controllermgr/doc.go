// Package controllermgr assembles the riposte controller process: the
// controller-runtime manager with the rule and playbook reconcilers, the live
// rule registry, the incident writer, the audit and object sources and the
// admission webhook with its self-managed certificate. `riposte controller`
// binds flags to Options and calls Run; end-to-end tests call Run directly.
package controllermgr
