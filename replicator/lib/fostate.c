/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The failover state machine (fostate.h): one table of what each failover
 * verb may do in each state and role, the refusal messages for everything
 * else, and the pieces the verbs share around it: the replicator's
 * lifetime lock, and the discarding of segments an old source shipped
 * after its VM failed over.
 */
#include "fostate.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "ferry/cache.h"
#include "ferry/changelog.h"
#include "ferry/log.h"
#include "ferry/util.h"
#include "maint.h"

static const char *const verb_names[FOSTATE_NVERBS] = {
	[FOSTATE_TEST_FAILOVER] = "test-failover",
	[FOSTATE_TEST_FAILOVER_CLEANUP] = "test-failover-cleanup",
	[FOSTATE_FAILOVER] = "failover",
	[FOSTATE_CHANGE_RECOVERY_POINT] = "change-recovery-point",
	[FOSTATE_COMMIT] = "commit",
	[FOSTATE_REPROTECT_PREPARE] = "reprotect-prepare",
	[FOSTATE_REPROTECT] = "reprotect",
	[FOSTATE_FAILBACK] = "failback",
	[FOSTATE_RESUME_REPLICATION] = "resume-replication",
};

const char *fostate_verb_name(enum fostate_verb verb)
{
	return verb < FOSTATE_NVERBS ? verb_names[verb] : "unknown";
}

const char *fostate_role_name(enum fostate_role role)
{
	return role == FOSTATE_BACK ? "back" : "forward";
}

int fostate_role_get(struct ferry_catalog *c, int64_t vm_id, enum fostate_role *ret)
{
	char buf[16] = "";
	int r = ferry_catalog_resource_get(c, vm_id, "role", buf, sizeof(buf));
	if (r < 0 && r != -ENOENT)
		return r;
	*ret = strcmp(buf, "back") == 0 ? FOSTATE_BACK : FOSTATE_FORWARD;
	return 0;
}

int fostate_role_set(struct ferry_catalog *c, int64_t vm_id, enum fostate_role role)
{
	return ferry_catalog_resource_set(c, vm_id, "role", fostate_role_name(role));
}

/*
 * Everything allowed; whatever is not here is refused. from 0: any state;
 * to 0: the state does not change. An error or resync state counts as
 * protected when the VM has a recovery state (an applied marker), else as
 * initial replication (effective()): a source lost in the middle of a
 * resync still fails over to the points it had.
 */
static const struct rule {
	enum fostate_verb verb;
	enum fostate_role role;
	int any_role;
	enum ferry_vm_state from, to;
} rules[] = {
	{ FOSTATE_TEST_FAILOVER, FOSTATE_FORWARD, 0, FERRY_VM_PROTECTED, 0 },
	{ FOSTATE_TEST_FAILOVER, FOSTATE_BACK, 0, FERRY_VM_PROTECTED, 0 },
	{ FOSTATE_TEST_FAILOVER_CLEANUP, 0, 1, 0, 0 },
	{ FOSTATE_FAILOVER, FOSTATE_FORWARD, 0, FERRY_VM_PROTECTED, FERRY_VM_FAILED_OVER },
	{ FOSTATE_CHANGE_RECOVERY_POINT, FOSTATE_FORWARD, 0, FERRY_VM_FAILED_OVER, 0 },
	{ FOSTATE_COMMIT, FOSTATE_FORWARD, 0, FERRY_VM_FAILED_OVER, FERRY_VM_COMMITTED },
	{ FOSTATE_REPROTECT, FOSTATE_FORWARD, 0, FERRY_VM_COMMITTED, FERRY_VM_REPROTECTING },
	{ FOSTATE_FAILBACK, FOSTATE_BACK, 0, FERRY_VM_PROTECTED, FERRY_VM_FAILED_BACK },
	{ FOSTATE_RESUME_REPLICATION, FOSTATE_FORWARD, 0, FERRY_VM_REPROTECTING,
	  FERRY_VM_PROTECTED },
	/* Left by an older ferry's failback run on the forward vault. */
	{ FOSTATE_RESUME_REPLICATION, FOSTATE_FORWARD, 0, FERRY_VM_FAILED_BACK,
	  FERRY_VM_PROTECTED },
};

static enum ferry_vm_state effective(const struct ferry_vm *vm)
{
	if (vm->state != FERRY_VM_ERROR && vm->state != FERRY_VM_RESYNC_REQUIRED &&
	    vm->state != FERRY_VM_RESYNCING)
		return vm->state;
	return vm->marker_seq > 0 ? FERRY_VM_PROTECTED : FERRY_VM_INITIAL;
}

static int say(char *msg, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int say(char *msg, size_t size, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, size, fmt, ap);
	va_end(ap);
	return -EPERM;
}

/* What the VM is, for the start of a refusal. */
struct who {
	const char *vault, *vm, *state;
	enum ferry_vm_state s; /* effective */
};

static int refuse_failed_over(const struct who *w, const char *verb, char *msg, size_t size)
{
	if (w->s == FERRY_VM_FAILED_OVER)
		return say(msg, size,
			   "VM %s is failed over (state: %s) and not committed: '%s' does not "
			   "apply; pick another point with 'ferry change-recovery-point' or make "
			   "it final with 'ferry commit --vault %s %s'",
			   w->vm, w->state, verb, w->vault, w->vm);
	if (w->s == FERRY_VM_COMMITTED)
		return say(msg, size,
			   "VM %s is failed over and already committed (state: %s): '%s' does "
			   "not apply; re-protect it with 'ferry reprotect-prepare' at the source "
			   "site, then 'ferry reprotect --vault %s %s' here",
			   w->vm, w->state, verb, w->vault, w->vm);
	return say(msg, size,
		   "VM %s is failed over and re-protecting (state: %s): '%s' does not apply; "
		   "fail back with 'ferry failback' at the source site, then 'ferry "
		   "resume-replication --vault %s %s' here",
		   w->vm, w->state, verb, w->vault, w->vm);
}

static int refuse_forward(const struct who *w, enum fostate_verb verb, char *msg, size_t size)
{
	const char *vn = fostate_verb_name(verb);
	int fo = w->s == FERRY_VM_FAILED_OVER || w->s == FERRY_VM_COMMITTED ||
		 w->s == FERRY_VM_REPROTECTING;
	if (w->s == FERRY_VM_FAILED_BACK && verb != FOSTATE_FAILBACK &&
	    verb != FOSTATE_REPROTECT_PREPARE)
		return say(msg, size,
			   "VM %s is marked failed-back in vault %s, which an older ferry's "
			   "failback left on the forward vault: run 'ferry resume-replication "
			   "--vault %s %s' to protect it again",
			   w->vm, w->vault, w->vault, w->vm);
	switch (verb) {
	case FOSTATE_TEST_FAILOVER:
	case FOSTATE_FAILOVER:
		if (w->s == FERRY_VM_INITIAL)
			return say(msg, size,
				   "VM %s is not protected yet (state: %s): initial replication "
				   "has not finished, so there is no recovery point to fail over "
				   "to; 'ferry status --vault %s' shows its progress",
				   w->vm, w->state, w->vault);
		if (verb == FOSTATE_FAILOVER && w->s == FERRY_VM_FAILED_OVER)
			return say(msg, size,
				   "VM %s is already failed over (state: %s): pick another point "
				   "with 'ferry change-recovery-point' or make it final with "
				   "'ferry commit --vault %s %s'",
				   w->vm, w->state, w->vault, w->vm);
		if (verb == FOSTATE_TEST_FAILOVER && fo)
			return say(msg, size,
				   "VM %s is failed over (state: %s): its failover clone is the "
				   "VM now; a test failover is for a protected VM, while "
				   "replication runs",
				   w->vm, w->state);
		return refuse_failed_over(w, vn, msg, size);
	case FOSTATE_CHANGE_RECOVERY_POINT:
	case FOSTATE_COMMIT:
		if (w->s == FERRY_VM_COMMITTED || w->s == FERRY_VM_REPROTECTING)
			return say(msg, size,
				   "VM %s's failover is already committed (state: %s): %s", w->vm,
				   w->state,
				   verb == FOSTATE_COMMIT ?
					   "there is nothing left to commit" :
					   "its recovery point can no longer change");
		return say(msg, size,
			   "VM %s is not failed over (state: %s): 'ferry %s' follows 'ferry "
			   "failover --vault %s %s'",
			   w->vm, w->state, vn, w->vault, w->vm);
	case FOSTATE_REPROTECT_PREPARE:
		return say(msg, size,
			   "VM %s is already in vault %s, which protects it (role forward, state: "
			   "%s): reprotect-prepare seeds a vault of its own at the source site "
			   "(ferry init --vault NEW-VAULT); if an earlier reprotect-prepare "
			   "stopped half-way, start again with a new vault",
			   w->vm, w->vault, w->state);
	case FOSTATE_REPROTECT:
		if (w->s == FERRY_VM_FAILED_OVER)
			return say(msg, size,
				   "VM %s's failover is not committed (state: %s): run 'ferry "
				   "commit --vault %s %s' first; re-protecting fixes the recovery "
				   "point",
				   w->vm, w->state, w->vault, w->vm);
		if (w->s == FERRY_VM_REPROTECTING)
			return say(
				msg, size,
				"VM %s is already re-protecting (state: %s): run the agent "
				"configuration 'ferry reprotect' wrote (%s/agents/%s.reprotect.conf "
				"by default), then fail back with 'ferry failback' at the source "
				"site",
				w->vm, w->state, w->vault, w->vm);
		return say(msg, size,
			   "VM %s is not failed over (state: %s): re-protect follows 'ferry "
			   "failover' and 'ferry commit'",
			   w->vm, w->state);
	case FOSTATE_FAILBACK:
		return say(msg, size,
			   "VM %s is protected by vault %s (role forward, state: %s)%s: failback "
			   "runs at the source site, on the vault 'ferry reprotect-prepare' seeded "
			   "from the original disks, once the VM has failed over and re-protected; "
			   "nothing was written",
			   w->vm, w->vault, w->state,
			   fo ? " and runs its failover here" :
				", it was never re-protected into it");
	case FOSTATE_RESUME_REPLICATION:
		if (fo)
			return say(msg, size,
				   "VM %s has not failed back yet (state: %s): re-protect it "
				   "('ferry reprotect' here after 'ferry reprotect-prepare' at the "
				   "source site) and run 'ferry failback' at the source site first",
				   w->vm, w->state);
		return say(msg, size, "VM %s is not failed over (state: %s): %s", w->vm, w->state,
			   w->s == FERRY_VM_INITIAL ? "its initial replication runs" :
						      "its replication runs already");
	default:
		return say(msg, size, "VM %s: 'ferry %s' is not possible in state %s", w->vm, vn,
			   w->state);
	}
}

static int refuse_back(const struct who *w, enum fostate_verb verb, char *msg, size_t size)
{
	const char *vn = fostate_verb_name(verb);
	if (w->s == FERRY_VM_FAILED_BACK) {
		if (verb == FOSTATE_FAILBACK)
			return say(msg, size,
				   "VM %s already failed back from vault %s (see 'ferry jobs'): "
				   "its original disks may have run since, and failing back again "
				   "would roll back their writes; nothing was written",
				   w->vm, w->vault);
		if (verb == FOSTATE_REPROTECT_PREPARE)
			return say(msg, size,
				   "VM %s was re-protected into vault %s and failed back already: "
				   "seed a new vault for the next re-protect (ferry init --vault "
				   "NEW-VAULT)",
				   w->vm, w->vault);
		return say(msg, size,
			   "VM %s failed back from vault %s (role back, state: %s): it runs on "
			   "its original disks again and is protected by the target site's vault; "
			   "'ferry %s' does not apply here",
			   w->vm, w->vault, w->state, vn);
	}
	if (w->s == FERRY_VM_INITIAL)
		return say(
			msg, size,
			"VM %s's re-protect seed in vault %s is not applied yet (state: %s): run "
			"'ferry-replicator --vault %s'",
			w->vm, w->vault, w->state, w->vault);
	switch (verb) {
	case FOSTATE_FAILOVER:
	case FOSTATE_CHANGE_RECOVERY_POINT:
	case FOSTATE_COMMIT:
		return say(msg, size,
			   "VM %s in vault %s is the re-protected copy of a failed-over VM (role "
			   "back, state: %s): bring it back to its original disks with 'ferry "
			   "failback --vault %s %s', not '%s'",
			   w->vm, w->vault, w->state, w->vault, w->vm, vn);
	case FOSTATE_REPROTECT_PREPARE:
		return say(msg, size,
			   "VM %s is already seeded into vault %s (role back, state: %s): run "
			   "'ferry reprotect' at the target site",
			   w->vm, w->vault, w->state);
	case FOSTATE_REPROTECT:
	case FOSTATE_RESUME_REPLICATION:
		return say(msg, size,
			   "VM %s in vault %s is the re-protected copy (role back, state: %s): "
			   "'ferry %s' runs at the target site, on the vault the VM failed over in",
			   w->vm, w->vault, w->state, vn);
	default:
		return say(msg, size,
			   "VM %s: 'ferry %s' is not possible in vault %s (role back, "
			   "state: %s)",
			   w->vm, vn, w->vault, w->state);
	}
}

int fostate_check(const char *vault_dir, const char *vm_name, const struct ferry_vm *vm,
		  enum fostate_role role, enum fostate_verb verb, enum ferry_vm_state *ret_next,
		  char *msg, size_t msgsize)
{
	if (!vm) {
		if (verb == FOSTATE_REPROTECT_PREPARE) {
			*ret_next = FERRY_VM_PROTECTED;
			return 0;
		}
		return say(msg, msgsize, "no VM '%s' in vault %s", vm_name, vault_dir);
	}
	enum ferry_vm_state s = effective(vm);
	for (size_t i = 0; i < ARRAY_SIZE(rules); i++) {
		const struct rule *ru = &rules[i];
		if (ru->verb != verb || (!ru->any_role && ru->role != role) ||
		    (ru->from && ru->from != s))
			continue;
		*ret_next = ru->to ?: vm->state;
		return 0;
	}
	char state[600];
	if (vm->state == FERRY_VM_ERROR && vm->error[0])
		snprintf(state, sizeof(state), "error: %.500s", vm->error);
	else
		snprintf(state, sizeof(state), "%s", ferry_vm_state_name(vm->state));
	const struct who w = { vault_dir, vm->name, state, s };
	return role == FOSTATE_BACK ? refuse_back(&w, verb, msg, msgsize) :
				      refuse_forward(&w, verb, msg, msgsize);
}

int fostate_require(struct ferry_vault *v, const struct ferry_vm *vm, enum fostate_verb verb,
		    enum ferry_vm_state *ret_next)
{
	enum fostate_role role = FOSTATE_FORWARD;
	if (vm) {
		int r = fostate_role_get(ferry_vault_catalog(v), vm->id, &role);
		if (r < 0)
			return log_error_errno(r, "cannot read the role of VM %s", vm->name);
	}
	char msg[1024];
	enum ferry_vm_state next;
	int r = fostate_check(ferry_vault_dir(v), vm ? vm->name : "", vm, role, verb, &next, msg,
			      sizeof(msg));
	if (r < 0) {
		log_error("%s", msg);
		return r;
	}
	if (ret_next)
		*ret_next = next;
	return 0;
}

int fostate_recheck(struct ferry_catalog *c, struct ferry_vm *vm, enum ferry_vm_state expected)
{
	int r = ferry_catalog_vm_get_by_id(c, vm->id, vm);
	if (r < 0)
		return log_error_errno(r, "cannot read VM %s", vm->name);
	if (vm->state != expected) {
		log_error("VM %s changed to state %s meanwhile (another ferry command?): nothing "
			  "was changed; look at 'ferry status' and run the command again if it "
			  "still applies",
			  vm->name, ferry_vm_state_name(vm->state));
		return -ESTALE;
	}
	return 0;
}

/* ---- the replicator's lifetime lock ---- */

int fostate_replicator_lock(const char *vault_dir, int *ret_fd)
{
	_cleanup_close_ int fd = -1;
	int r = maint_lock(vault_dir, "replicator", &fd);
	if (r < 0)
		return r;
	char buf[32];
	int n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
	/* The pid only names the holder in messages: best effort. */
	if (ftruncate(fd, 0) < 0 || pwrite(fd, buf, (size_t)n, 0) != n)
		log_debug("cannot note the replicator's pid in %s/replicator.lock", vault_dir);
	*ret_fd = TAKE_FD(fd);
	return 0;
}

static pid_t holder_pid(const char *vault_dir)
{
	_cleanup_free_ char *path = NULL;
	if (asprintf(&path, "%s/replicator.lock", vault_dir) < 0)
		return 0;
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	char buf[32] = "";
	if (fd < 0 || pread(fd, buf, sizeof(buf) - 1, 0) < 0)
		return 0;
	long pid = strtol(buf, NULL, 10);
	return pid > 0 ? (pid_t)pid : 0;
}

int fostate_replicator_exclude(const char *vault_dir, int *ret_fd, pid_t *ret_pid)
{
	int r = maint_lock(vault_dir, "replicator", ret_fd);
	if (r == -EBUSY)
		*ret_pid = holder_pid(vault_dir);
	return r;
}

/* ---- segments an old source shipped after failover ---- */

DEFINE_TRIVIAL_CLEANUP_FUNC(struct ferry_segment *, ferry_segment_free)

/* Segment seq of vm's cache, verified whole, linking onto *prev. */
static int follow(struct ferry_cache *cache, const struct ferry_vm *vm, uint64_t seq,
		  struct ferry_id *prev, uint64_t *bytes, char *msg, size_t msgsize)
{
	_cleanup_free_ void *buf = NULL;
	size_t len;
	int r = ferry_cache_get_segment(cache, vm->name, seq, &buf, &len);
	if (r < 0) {
		snprintf(msg, msgsize, "cannot read segment %llu of VM %s in %s: %s",
			 (unsigned long long)seq, vm->name, vm->cache_url, strerror(-r));
		return r;
	}
	_cleanup_(ferry_segment_freep) struct ferry_segment *seg = NULL;
	r = ferry_segment_parse(buf, len, &seg);
	const struct ferry_segment_info *info = r >= 0 ? ferry_segment_info(seg) : NULL;
	if (r >= 0 && (info->seq != seq || strcmp(info->vm, vm->name) != 0 ||
		       !ferry_id_equal(&info->prev, prev)))
		r = -EBADMSG;
	if (r < 0) {
		snprintf(msg, msgsize,
			 "segment %llu of VM %s in %s is damaged or does not follow the last "
			 "applied one: remove it from the cache if the agent that wrote it is "
			 "gone, and run the command again",
			 (unsigned long long)seq, vm->name, vm->cache_url);
		return -EBADMSG;
	}
	*prev = info->digest;
	*bytes += len;
	return 0;
}

int fostate_abandoned_find(const struct ferry_vm *vm, struct fostate_abandoned *ret, char *msg,
			   size_t msgsize)
{
	_cleanup_(ferry_cache_freep) struct ferry_cache *cache = NULL;
	int r = ferry_cache_open(vm->cache_url, 0, &cache);
	if (r < 0) {
		snprintf(msg, msgsize, "cannot open cache %s of VM %s: %s", vm->cache_url, vm->name,
			 strerror(-r));
		return r;
	}
	_cleanup_free_ uint64_t *seqs = NULL;
	size_t n;
	uint64_t total;
	r = ferry_cache_list_segments(cache, vm->name, &seqs, &n, &total);
	if (r < 0) {
		snprintf(msg, msgsize, "cannot list the segments of VM %s in %s: %s", vm->name,
			 vm->cache_url, strerror(-r));
		return r;
	}
	struct fostate_abandoned ab = { .last_seq = vm->applied_seq,
					.last_digest = vm->applied_digest };
	for (size_t i = 0; i < n; i++) {
		if (seqs[i] <= vm->applied_seq)
			continue; /* applied, its delete interrupted */
		if (seqs[i] != ab.last_seq + 1) {
			snprintf(
				msg, msgsize,
				"the segments of VM %s in %s have a gap after %llu: remove the "
				"segments from %llu on from the cache if the agent that wrote them "
				"is gone, and run the command again",
				vm->name, vm->cache_url, (unsigned long long)ab.last_seq,
				(unsigned long long)seqs[i]);
			return -EBADMSG;
		}
		r = follow(cache, vm, seqs[i], &ab.last_digest, &ab.bytes, msg, msgsize);
		if (r < 0)
			return r;
		if (ab.count++ == 0)
			ab.first_seq = seqs[i];
		ab.last_seq = seqs[i];
	}
	*ret = ab;
	return 0;
}

int fostate_abandoned_drop(const struct ferry_vm *vm, const struct fostate_abandoned *ab)
{
	if (ab->count == 0)
		return 0;
	_cleanup_(ferry_cache_freep) struct ferry_cache *cache = NULL;
	int r = ferry_cache_open(vm->cache_url, 0, &cache);
	if (r < 0)
		return r;
	const struct ferry_ack ack = { ab->last_seq, ab->last_digest };
	r = ferry_cache_put_ack(cache, vm->name, &ack);
	for (uint64_t s = ab->first_seq; r >= 0 && s <= ab->last_seq; s++)
		r = ferry_cache_delete_segment(cache, vm->name, s);
	return r;
}
