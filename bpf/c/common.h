// SPDX-License-Identifier: GPL-2.0
// Shared record layout, maps and the prefilter of the riposte sensors.
// The Go decoder (bpf/record.go) and the Go model of the filter
// (bpf/filter.go) mirror this file; change them together.
#pragma once

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "GPL";

// Event kinds: the numbering is shared with bpf/record.go.
enum kind {
	K_EXEC = 1, K_EXIT, K_FORK, K_SETUID, K_CAPSET, K_PTRACE, K_UNSHARE,
	K_SETNS, K_MOUNT, K_MODULE, K_BPF, K_OPEN, K_CONNECT, K_ACCEPT, K_LISTEN,
	K_ENFORCE, K_MAX,
};
#define KIND_SLOTS 32

// Counter outcomes, per kind.
enum outcome { O_SEEN, O_DROPPED, O_SUBMITTED, O_LOST, O_MAX };

#define PATH_MAX_B 256   // bytes of a path kept (LPM trie keys are at most 256 bytes)
#define PATH_MASK (PATH_MAX_B - 1)
#define ARGS_MAX_B 1024  // bytes of argv kept
#define ARGS_MASK (ARGS_MAX_B - 1)
#define NAME_MAX_B 64    // bytes of a base name key
#define STR_MAX_B 128    // bytes of a mount string

struct hdr {
	u8 kind;
	u8 version;
	u16 size;     // whole record, header included
	u32 cpu;
	u64 ktime;    // bpf_ktime_get_boot_ns
	u32 pid;      // tgid
	u32 tid;
	u32 ppid;
	u32 uid;
	u32 gid;
	u32 euid;
	u64 cgroup;
	u32 mntns;
	u32 pidns;
	char comm[16];
}; // 80 bytes

#define EXE_UPPER 1
#define EXE_MEMFD 2
#define EXE_INCOMPLETE 4 // the binary's path is only its tail

struct exec_rec {
	struct hdr h;
	u64 ino;
	u32 exe_flags;
	u32 enforce_rule; // rule slot + 1 when the exec was killed, else 0
	u16 bin_len;      // bytes of bin, NUL excluded
	u16 args_len;     // bytes of args (NUL separated)
	u32 argc;
	char data[PATH_MAX_B + ARGS_MAX_B];
};

struct fork_rec { struct hdr h; u32 parent_tid; u32 flags; };
struct exit_rec { struct hdr h; s32 code; u32 pad; };

struct open_rec {
	struct hdr h;
	u32 flags;
	u32 mode;
	u64 ino;
	u16 path_len;
	u16 pad[3];
	char path[PATH_MAX_B];
};

struct net_rec {
	struct hdr h;
	u8 family; // 4 or 6
	u8 proto;  // IPPROTO_TCP / IPPROTO_UDP
	u16 lport;
	u16 rport;
	u16 pad;
	u8 laddr[16];
	u8 raddr[16];
};

// Syscall ids of the privilege and escape signals (bpf/record.go names them).
enum sc {
	SC_SETUID = 1, SC_SETGID, SC_SETREUID, SC_SETREGID, SC_SETRESUID, SC_SETRESGID,
	SC_SETFSUID, SC_SETFSGID, SC_CAPSET, SC_PTRACE, SC_UNSHARE, SC_SETNS, SC_MOUNT,
	SC_INIT_MODULE, SC_FINIT_MODULE, SC_BPF,
};

struct sys_rec {
	struct hdr h;
	u32 sc;
	s32 ret;
	u64 a[4];
	u16 len[3];   // mount source, target, fstype
	u16 pad2;
	char s[3][STR_MAX_B];
};

// ---------------------------------------------------------------- maps

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KIND_SLOTS * O_MAX);
	__type(key, u32);
	__type(value, u64);
} counters SEC(".maps");

// scratch is a per-CPU buffer records are built in: they exceed the stack.
union scratch_u {
	struct exec_rec exec;
	struct open_rec open;
	struct sys_rec sys;
};
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, u32);
	__type(value, union scratch_u);
} scratch SEC(".maps");

// The prefilter. Rules occupy bit slots of a u64; every map value is the mask
// of rules a value satisfies. The filter of one generation is written while
// the other is live, then `active` flips, so readers never see half a rule set.
struct filter_cfg {
	u64 kind_rules[KIND_SLOTS]; // rules that see each kind
	u64 host_ok;   // rules that do not require a container
	u64 bin_any;   // rules with no binary constraint
	u64 base_any;  // rules with no base-name constraint
	u64 path_any;
	u64 pport_any;
	u64 lport_any;
	u64 cidr_any;
	u32 host_mntns;  // mount namespace of the host: another one is a container
	u32 agent_tgid;  // events of the agent itself are not reported
	u32 always;      // kinds submitted whatever the rules (bit per kind)
	u32 pad;
};
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, u32);
	__type(value, struct filter_cfg);
} filter SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u32);
} active SEC(".maps");

struct str_key { u32 gen; char s[PATH_MAX_B]; };
struct name_key { u32 gen; char s[NAME_MAX_B]; };
struct port_key { u32 gen; u32 port; };
// LPM data is at most 256 bytes: the generation byte and 255 path bytes.
struct lpm_path_key { u32 prefixlen; u8 gen; char s[PATH_MAX_B - 1]; };
struct lpm_v4_key { u32 prefixlen; u8 gen; u8 a[4]; };
struct lpm_v6_key { u32 prefixlen; u8 gen; u8 a[16]; };

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct str_key);
	__type(value, u64);
} filter_bins SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct name_key);
	__type(value, u64);
} filter_names SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 4096);
	__type(key, struct lpm_path_key);
	__type(value, u64);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} filter_paths SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct port_key);
	__type(value, u64);
} filter_pports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct port_key);
	__type(value, u64);
} filter_lports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 4096);
	__type(key, struct lpm_v4_key);
	__type(value, u64);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} filter_cidr4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 4096);
	__type(key, struct lpm_v6_key);
	__type(value, u64);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} filter_cidr6 SEC(".maps");

// In-kernel kill at exec: exact binary paths and base names -> rule slot + 1
// in the low 24 bits, KILL_* flags above: where the rule's playbook lets the
// kernel kill. Without flags only processes of known, unprotected
// containers are killed (container_cgroups value CG_CONTAINER).
#define KILL_SLOT_MASK 0xffffff
#define KILL_HOST (1u << 24)      // host processes too (cluster playbook allowHostProcesses)
#define KILL_PROTECTED (1u << 25) // containers of protected namespaces too
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct str_key);
	__type(value, u32);
} kill_bins SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct name_key);
	__type(value, u32);
} kill_names SEC(".maps");

// procs records every process's last exec (time, parent, binary),
// submitted or not, and is copied to children at fork. The user-space
// process table uses it to notice entries gone stale and to name processes
// that exited before it could read /proc: the prefilter drops most execs.
//
// origin says how the process's tree entered its pid namespace, decided at
// the fork that crossed into it and inherited by every descendant whatever
// they do later (a nested unshare does not reset it): ORIGIN_ENTRYPOINT when
// that child was the namespace's pid 1 (a runtime starting a container),
// ORIGIN_EXEC when it joined a namespace that already had one (runc exec,
// hence kubectl exec, probes, the kubelet API). root is that child's tgid
// and root_ktime the time of that fork.
#define ORIGIN_ENTRYPOINT 1
#define ORIGIN_EXEC 2
struct proc_v {
	u64 ktime;
	u32 ppid;
	u16 bin_len;
	u8 origin;
	u8 pad;
	u32 root;
	u32 pad2;
	u64 root_ktime;
	char bin[PATH_MAX_B];
};
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 32768);
	__type(key, u32);
	__type(value, struct proc_v);
} procs SEC(".maps");

// ---------------------------------------------------------------- helpers

// bpf_rdonly_cast turns a kernel address into a typed pointer the program
// may load from directly (faulting loads read zero). The verifier rewrites
// it into a plain move, so a direct load costs a few nanoseconds where each
// bpf_probe_read_kernel is a helper call (~50-100 ns on this VM).
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;
#define RDONLY(type, p) ((type *)bpf_rdonly_cast((p), bpf_core_type_id_kernel(type)))

static __always_inline void count(u32 kind, u32 outcome)
{
	u32 k = (kind & (KIND_SLOTS - 1)) * O_MAX + outcome;
	u64 *c = bpf_map_lookup_elem(&counters, &k);
	if (c)
		*c += 1; // per-CPU: no atomics needed
}

// t is a BTF pointer: direct loads (a fault reads 0, e.g. no nsproxy at exit).
static __always_inline u32 task_mntns(struct task_struct *t)
{
	return t->nsproxy->mnt_ns->ns.inum;
}

static __always_inline u32 task_pidns(struct task_struct *t)
{
	unsigned int level = BPF_CORE_READ(t, thread_pid, level);
	return BPF_CORE_READ(t, thread_pid, numbers[level].ns, ns.inum);
}

// task_vnr is the task's pid as its own pid namespace numbers it.
static __always_inline u32 task_vnr(struct task_struct *t)
{
	unsigned int level = BPF_CORE_READ(t, thread_pid, level);
	return BPF_CORE_READ(t, thread_pid, numbers[level].nr);
}

static __always_inline void fill_hdr(struct hdr *h, u8 kind, struct task_struct *t)
{
	h->kind = kind;
	h->version = 1;
	h->cpu = bpf_get_smp_processor_id();
	h->ktime = bpf_ktime_get_boot_ns();
	h->pid = BPF_CORE_READ(t, tgid);
	h->tid = BPF_CORE_READ(t, pid);
	h->ppid = BPF_CORE_READ(t, real_parent, tgid);
	h->uid = BPF_CORE_READ(t, cred, uid.val);
	h->gid = BPF_CORE_READ(t, cred, gid.val);
	h->euid = BPF_CORE_READ(t, cred, euid.val);
	h->cgroup = BPF_CORE_READ(t, cgroups, dfl_cgrp, kn, id);
	h->mntns = task_mntns(t);
	h->pidns = task_pidns(t);
	BPF_CORE_READ_STR_INTO(&h->comm, t, comm);
}

static __always_inline struct filter_cfg *cfg_get(u32 *gen)
{
	u32 zero = 0;
	u32 *a = bpf_map_lookup_elem(&active, &zero);
	if (!a)
		return 0;
	*gen = *a & 1;
	return bpf_map_lookup_elem(&filter, gen);
}

// base_mask is the part of the filter every kind shares: the rules that see
// the kind and, outside containers, only those that do not need one.
static __always_inline u64 base_mask(struct filter_cfg *cfg, u32 kind, u32 mntns)
{
	u64 m = cfg->kind_rules[kind & (KIND_SLOTS - 1)];
	if (mntns == cfg->host_mntns)
		m &= cfg->host_ok;
	return m;
}

// container_cgroups are the cgroups user space knows to be containers'
// (from enrichment). A process is in a container for the filter when its
// mount namespace is not the host's or its cgroup is one of these, so a
// container process that joined the host's mount namespace still counts.
// The value says whether the kernel may kill there: CG_CONTAINER for a
// container of a known pod outside the protected namespaces, CG_PROTECTED
// inside them, CG_UNKNOWN while the pod is not known yet (never killed in
// the kernel: user space kills after the match once it knows).
#define CG_UNKNOWN 1
#define CG_CONTAINER 2
#define CG_PROTECTED 3
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, u64);
	__type(value, u8);
} container_cgroups SEC(".maps");

// task_where returns the host's mount namespace for a host process and 0
// for a container's: what base_mask compares.
static __always_inline u32 task_where(struct filter_cfg *cfg, struct task_struct *t)
{
	u32 mntns = task_mntns(t);
	if (mntns != cfg->host_mntns)
		return 0;
	u64 cg = t->cgroups->dfl_cgrp->kn->id;
	if (bpf_map_lookup_elem(&container_cgroups, &cg))
		return 0;
	return mntns;
}

// may_kill decides whether the kernel kills task t for a kill-map value v:
// in a known container (protected only with KILL_PROTECTED), or on the host
// (host mount namespace, no container cgroup) only with KILL_HOST.
static __always_inline bool may_kill(struct filter_cfg *cfg, struct task_struct *t, u32 v)
{
	u64 cg = t->cgroups->dfl_cgrp->kn->id;
	u8 *cls = bpf_map_lookup_elem(&container_cgroups, &cg);
	if (cls)
		return *cls == CG_CONTAINER || (*cls == CG_PROTECTED && (v & KILL_PROTECTED));
	if (task_mntns(t) != cfg->host_mntns)
		return false; // a container riposte does not know yet
	return v & KILL_HOST;
}

static __always_inline bool always(struct filter_cfg *cfg, u32 kind)
{
	return cfg->always & (1u << (kind & 31));
}

// submit copies a built record into the ring buffer and counts the outcome.
static __always_inline void submit(void *rec, u32 size, u32 kind)
{
	if (size > sizeof(union scratch_u))
		size = sizeof(union scratch_u);
	if (bpf_ringbuf_output(&events, rec, size & 0xffff, 0) == 0)
		count(kind, O_SUBMITTED);
	else
		count(kind, O_LOST);
}

static __always_inline bool is_self(struct filter_cfg *cfg)
{
	return cfg->agent_tgid && (u32)(bpf_get_current_pid_tgid() >> 32) == cfg->agent_tgid;
}

// basename_off finds where the base name of a NUL-terminated path of len
// bytes starts. bpf_loop keeps the verifier from walking every iteration.
struct base_ctx { const char *p; u32 len; u32 off; };

static long base_step(u32 i, void *c)
{
	struct base_ctx *b = c;
	if (i >= b->len)
		return 1;
	char ch = 0;
	bpf_probe_read_kernel(&ch, 1, b->p + (i & PATH_MASK));
	if (ch == '/')
		b->off = i + 1;
	return 0;
}

static __always_inline u32 basename_off(const char *p, u32 len)
{
	struct base_ctx b = { .p = p, .len = len, .off = 0 };
	bpf_loop(PATH_MAX_B, base_step, &b, 0);
	return b.off & PATH_MASK;
}

// Path resolution: walk dentries up to the task's root, crossing mount
// points, writing names backwards into a per-CPU buffer (what d_path does;
// bpf_d_path is only allowed in fentry programs, which this kernel refuses).
#define WALK_BUF 1024
#define WALK_END 512
#define WALK_DEPTH 64
struct walk_buf { char b[WALK_BUF]; };
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct walk_buf);
} walkbuf SEC(".maps");

struct walk_ctx {
	struct dentry *d;
	struct mount *mnt;
	struct dentry *mnt_root; // root dentry of mnt, read once per mount
	struct dentry *root_d;
	struct vfsmount *root_mnt;
	u32 off;
	u32 done; // the walk reached a root: the path is complete
};

// struct mount is private to fs/ and its CO-RE relocations do not resolve
// here; its head (mnt_hash, mnt_parent, mnt_mountpoint, mnt) has kept this
// layout since Linux 3.3.
#define MNT_OFF 32

static __always_inline struct mount *real_mount(struct vfsmount *m)
{
	return (void *)m - MNT_OFF;
}

static __always_inline struct mount *mnt_parent(struct mount *m)
{
	struct mount *p = 0;
	bpf_probe_read_kernel(&p, sizeof(p), (void *)m + 16);
	return p;
}

static __always_inline struct dentry *mnt_mountpoint(struct mount *m)
{
	struct dentry *d = 0;
	bpf_probe_read_kernel(&d, sizeof(d), (void *)m + 24);
	return d;
}

// walk_step moves one dentry up. Each step costs three kernel reads
// (parent, name, name bytes); mount crossings one or two more.
static long walk_step(u32 i, void *c)
{
	struct walk_ctx *w = c;
	struct dentry *d = RDONLY(struct dentry, w->d);
	struct vfsmount *vm = (void *)w->mnt + MNT_OFF;
	if ((void *)d == (void *)w->root_d && vm == w->root_mnt) {
		w->done = 1;
		return 1;
	}
	if ((void *)d == (void *)w->mnt_root) {
		struct mount *parent = mnt_parent(w->mnt);
		if (parent == w->mnt) {
			w->done = 1; // the root of the mount tree
			return 1;
		}
		w->d = mnt_mountpoint(w->mnt);
		w->mnt = parent;
		w->mnt_root = 0;
		bpf_probe_read_kernel(&w->mnt_root, sizeof(w->mnt_root), &RDONLY(struct vfsmount, (void *)parent + MNT_OFF)->mnt_root);
		return 0;
	}
	// The parent goes through a probe read so the loop state holds a plain
	// address, not a typed pointer: the verifier then converges on it.
	struct dentry *up = 0;
	bpf_probe_read_kernel(&up, sizeof(up), &d->d_parent);
	if ((void *)up == (void *)d) {
		w->done = 1;
		return 1;
	}
	u32 len = d->d_name.len & 0xff;
	const unsigned char *name = d->d_name.name;
	if (len + 1 > w->off)
		return 1; // too long: incomplete
	u32 zero = 0;
	struct walk_buf *wb = bpf_map_lookup_elem(&walkbuf, &zero);
	if (!wb)
		return 1;
	w->off -= len + 1;
	u32 off = w->off & (WALK_END - 1);
	wb->b[off] = '/';
	bpf_probe_read_kernel(wb->b + ((off + 1) & (WALK_END - 1)), len, name);
	w->d = up;
	return 0;
}

// resolve writes the path of p, seen from task t, into out (PATH_MAX_B
// bytes, NUL-terminated) and returns its length. A longer path keeps its
// first PATH_MAX_B-1 bytes, so prefixes of it are still prefixes. A path
// deeper than WALK_DEPTH or longer than WALK_END is only its tail: then
// *complete is false and the filter must not judge it by its prefix.
static __always_inline u32 resolve(struct task_struct *t, const struct path *p, char *out, bool *complete)
{
	u32 zero = 0;
	struct walk_buf *wb = bpf_map_lookup_elem(&walkbuf, &zero);
	if (!wb)
		return 0;
	struct walk_ctx w = {
		.d = p->dentry,
		.mnt = real_mount(p->mnt),
		.mnt_root = p->mnt->mnt_root,
		.root_d = t->fs->root.dentry,
		.root_mnt = t->fs->root.mnt,
		.off = WALK_END,
	};
	wb->b[WALK_END] = 0;
	bpf_loop(WALK_DEPTH, walk_step, &w, 0);
	*complete = w.done;
	u32 off = w.off & (WALK_END - 1);
	if (w.off == WALK_END) {
		out[0] = '/';
		out[1] = 0;
		return 1;
	}
	u32 len = WALK_END - off;
	bpf_probe_read_kernel(out, PATH_MAX_B, wb->b + off);
	if (len > PATH_MAX_B - 1)
		len = PATH_MAX_B - 1;
	out[len & PATH_MASK] = 0;
	return len;
}

// lookup_path returns the rules whose path prefix the path has. The trie
// holds for each prefix the union of the rules of all its own prefixes, so the
// longest match is the whole answer.
static __always_inline u64 lookup_path(u32 gen, struct lpm_path_key *k, const char *path, u32 len)
{
	k->gen = gen;
	bpf_probe_read_kernel(k->s, sizeof(k->s), path);
	if (len > sizeof(k->s))
		len = sizeof(k->s);
	k->prefixlen = 8 + len * 8;
	u64 *v = bpf_map_lookup_elem(&filter_paths, k);
	return v ? *v : 0;
}

static __always_inline u64 lookup_bin(u32 gen, struct str_key *k)
{
	k->gen = gen;
	u64 *v = bpf_map_lookup_elem(&filter_bins, k);
	return v ? *v : 0;
}

static __always_inline u64 lookup_name(u32 gen, struct name_key *k)
{
	k->gen = gen;
	u64 *v = bpf_map_lookup_elem(&filter_names, k);
	return v ? *v : 0;
}

static __always_inline u64 lookup_port(void *map, u32 gen, u16 port)
{
	struct port_key k = { .gen = gen, .port = port };
	u64 *v = bpf_map_lookup_elem(map, &k);
	return v ? *v : 0;
}

// lookup_ip mirrors CEL's inCIDR: an IPv4-mapped IPv6 address is looked up
// as the IPv4 address it carries; no address is in no network.
static __always_inline u64 lookup_ip(u32 gen, u8 family, const u8 *a)
{
	if (family == 4) {
		struct lpm_v4_key k = { .prefixlen = 8 + 32, .gen = gen };
		__builtin_memcpy(k.a, a, 4);
		u64 *v = bpf_map_lookup_elem(&filter_cidr4, &k);
		return v ? *v : 0;
	}
	if (family != 6)
		return 0;
	u32 w0 = 0, w1 = 0, w2 = 0;
	__builtin_memcpy(&w0, a, 4);
	__builtin_memcpy(&w1, a + 4, 4);
	__builtin_memcpy(&w2, a + 8, 4);
	if (w0 == 0 && w1 == 0 && w2 == bpf_htonl(0xffff)) {
		struct lpm_v4_key k = { .prefixlen = 8 + 32, .gen = gen };
		__builtin_memcpy(k.a, a + 12, 4);
		u64 *v = bpf_map_lookup_elem(&filter_cidr4, &k);
		return v ? *v : 0;
	}
	struct lpm_v6_key k = { .prefixlen = 8 + 128, .gen = gen };
	__builtin_memcpy(k.a, a, 16);
	u64 *v = bpf_map_lookup_elem(&filter_cidr6, &k);
	return v ? *v : 0;
}

// net_pass is the network part of the filter.
static __always_inline bool net_pass(struct filter_cfg *cfg, u32 gen, u32 kind, u32 mntns,
				     u8 family, u16 lport, u16 rport, const u8 *raddr, bool has_peer)
{
	u64 m = base_mask(cfg, kind, mntns);
	if (!m)
		return false;
	m &= lookup_port(&filter_pports, gen, rport) | cfg->pport_any;
	m &= lookup_port(&filter_lports, gen, lport) | cfg->lport_any;
	if (!m)
		return false;
	m &= (has_peer ? lookup_ip(gen, family, raddr) : 0) | cfg->cidr_any;
	return m != 0;
}
