/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The `qemu` tracker (agent-qemu.h for what it does and why). Names it
 * gives qemu objects derive from a hash of the VM name, so that they fit
 * qemu's 31-character node names and two agents on one qemu never meet:
 *   ferry-<h>-<gen>   the dirty bitmap of every disk, gen counting cycles
 *   fy<h>-<i>-f / -v  the scratch file node and the view (qcow2 overlay)
 *   fy<h>-<i>-b       the backup job that keeps the view
 *   fy<h>-<i>         the NBD export of the view
 * with <h> 8 hex digits and <i> the disk's index. The bitmap generation
 * is found in qemu at every (re)connection, never stored.
 */
#include "agent-qemu.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "ferry/cache.h"
#include "ferry/changelog.h"
#include "ferry/crypto.h"
#include "ferry/log.h"
#include "ferry/util.h"
#include "freeze.h"
#include "groupcut.h"
#include "nbdview.h"
#include "pausewd.h"
#include "qmp.h"
#include "viewship.h"

#define BLOCK FERRY_BLOCK_SIZE
#define NODE_NAME_MAX 31
/* How long removing a job, an export or a node may take before the cycle
 * gives up on it (the next start cleans up again). */
#define SETTLE_NS (INT64_C(10) * 1000000000)

struct qdisk {
	const char *name, *node;
	uint16_t idx;
	/* Size, full cycle and fingerprints: what the shipping shares
	 * (viewship.h). */
	struct viewship_disk *vd;
	int persistent; /* qcow2: the bitmap survives a qemu restart */
	int has_cur;    /* qemu holds the recording bitmap of generation gen */
	char file_node[NODE_NAME_MAX + 1], view_node[NODE_NAME_MAX + 1];
	char job[NODE_NAME_MAX + 1], export[NODE_NAME_MAX + 1];
	char *scratch;
};

struct agent_qemu {
	const struct agent_qemu_params *p;
	struct qdisk *disks;
	char hash[9];
	char *nbd_sock;
	struct qmp *q;
	int nbd_started;
	/* A cycle failed after its cut: its frozen bitmap waits in qemu to be
	 * merged before the next cut. */
	int need_recover;
	uint64_t gen; /* of the recording bitmap; 0: none yet */
	struct agent_scan_stats st;

	/* Reads the views and ships them (viewship.h). */
	struct viewship *vs;
	/* The consistency group's last round this agent took part in. */
	uint64_t group_round;
	struct viewship_app app; /* app-consistent cuts (viewship.h) */
};

/* ---- names ---- */

static int node_name_valid(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > NODE_NAME_MAX ||
	    !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z')))
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.",
			    s[i]))
			return 0;
	return 1;
}

static void bitmap_name(const struct agent_qemu *aq, uint64_t gen, char *buf, size_t size)
{
	snprintf(buf, size, "ferry-%s-%" PRIu64, aq->hash, gen);
}

/* The generation of one of our bitmaps, or 0 for any other name. */
static uint64_t bitmap_gen(const struct agent_qemu *aq, const char *name)
{
	char prefix[32];
	snprintf(prefix, sizeof(prefix), "ferry-%s-", aq->hash);
	size_t n = strlen(prefix);
	if (strncmp(name, prefix, n) != 0 || !name[n])
		return 0;
	char *end;
	errno = 0;
	unsigned long long g = strtoull(name + n, &end, 10);
	return errno || *end || name[n] < '1' || name[n] > '9' ? 0 : (uint64_t)g;
}

/* ---- QMP helpers ---- */

static int qmp_fail(struct agent_qemu *aq, int r, const char *what)
{
	if (r == -EREMOTEIO)
		log_error("VM %s: %s: qemu says: %s", aq->p->ship.vm, what, qmp_last_error(aq->q));
	else
		log_error_errno(r, "VM %s: %s", aq->p->ship.vm, what);
	return r;
}

static struct json_object *member(struct json_object *o, const char *key)
{
	struct json_object *v = NULL;
	return o && json_object_object_get_ex(o, key, &v) ? v : NULL;
}

static const char *member_str(struct json_object *o, const char *key)
{
	struct json_object *v = member(o, key);
	return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

/* Whether a list answer (query-block-jobs, query-block-exports,
 * query-jobs) still holds an entry whose key is id. */
static int listed(struct json_object *list, const char *key, const char *id)
{
	if (!list || !json_object_is_type(list, json_type_array))
		return 0;
	for (size_t i = 0; i < json_object_array_length(list); i++) {
		const char *v = member_str(json_object_array_get_idx(list, i), key);
		if (v && strcmp(v, id) == 0)
			return 1;
	}
	return 0;
}

/* Waits until query (a list) no longer names id under key. */
static int wait_gone(struct agent_qemu *aq, const char *query, const char *key, const char *id)
{
	int64_t deadline = ferry_mono_ns() + SETTLE_NS;
	for (;;) {
		struct json_object *list = NULL;
		int r = qmp_execute(aq->q, query, NULL, &list);
		if (r < 0)
			return qmp_fail(aq, r, query);
		int still = listed(list, key, id);
		json_object_put(list);
		if (!still)
			return 0;
		if (ferry_mono_ns() > deadline)
			return log_error_errno(-ETIMEDOUT, "VM %s: %s still lists %s",
					       aq->p->ship.vm, query, id);
		struct timespec ts = { 0, 5 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
}

/* Runs command with arguments from a JSON text built with printf; strings
 * that may hold any byte (paths) go in through quoted(). */
static int run(struct agent_qemu *aq, struct json_object **ret, const char *command,
	       const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int run(struct agent_qemu *aq, struct json_object **ret, const char *command,
	       const char *fmt, ...)
{
	char text[2048];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(text))
		return -ENAMETOOLONG;
	struct json_object *args = json_tokener_parse(text);
	if (!args)
		return -EINVAL; /* a bug here: every argument is ours or quoted */
	return qmp_execute(aq->q, command, args, ret);
}

/* Runs a command whose failure only means there was nothing to remove. */
#define try_run(aq, command, ...) ((void)run(aq, NULL, command, __VA_ARGS__))

/* s as a JSON string literal, quotes included, in buf. */
static const char *quoted(const char *s, char *buf, size_t size)
{
	struct json_object *o = json_object_new_string(s);
	snprintf(buf, size, "%s",
		 o ? json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN) : "\"\"");
	json_object_put(o);
	return buf;
}

/* ---- the view of one disk: create and drop ---- */

static int drop_view(struct agent_qemu *aq, struct qdisk *d)
{
	int r = 0, k;
	try_run(aq, "block-export-del", "{\"id\": \"%s\", \"mode\": \"hard\"}", d->export);
	k = wait_gone(aq, "query-block-exports", "id", d->export);
	r = r < 0 ? r : k;
	try_run(aq, "block-job-cancel", "{\"device\": \"%s\", \"force\": true}", d->job);
	k = wait_gone(aq, "query-block-jobs", "device", d->job);
	r = r < 0 ? r : k;
	try_run(aq, "blockdev-del", "{\"node-name\": \"%s\"}", d->view_node);
	try_run(aq, "blockdev-del", "{\"node-name\": \"%s\"}", d->file_node);
	if (unlink(d->scratch) < 0 && errno != ENOENT)
		log_warning("VM %s: cannot remove %s: %m", aq->p->ship.vm, d->scratch);
	return r;
}

/* The scratch overlay: an empty qcow2 as large as the disk, formatted by
 * qemu itself (blockdev-create), backed by the disk. */
static int make_view(struct agent_qemu *aq, struct qdisk *d)
{
	_cleanup_close_ int fd = open(d->scratch, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return log_error_errno(-errno, "VM %s: cannot create %s", aq->p->ship.vm,
				       d->scratch);
	char path[PATH_MAX + 64];
	int r = run(aq, NULL, "blockdev-add",
		    "{\"driver\": \"file\", \"node-name\": \"%s\", \"filename\": %s}", d->file_node,
		    quoted(d->scratch, path, sizeof(path)));
	if (r < 0)
		return qmp_fail(aq, r, "cannot open the scratch overlay in qemu");
	char job[NODE_NAME_MAX + 8];
	snprintf(job, sizeof(job), "%s-c", d->view_node);
	r = run(aq, NULL, "blockdev-create",
		"{\"job-id\": \"%s\", \"options\": {\"driver\": \"qcow2\", \"file\": \"%s\", "
		"\"size\": %" PRIu64 "}}",
		job, d->file_node, d->vd->size);
	if (r < 0)
		return qmp_fail(aq, r, "cannot format the scratch overlay");
	/* A concluded job stays listed until dismissed. */
	int64_t deadline = ferry_mono_ns() + SETTLE_NS;
	for (;;) {
		struct json_object *jobs = NULL;
		r = qmp_execute(aq->q, "query-jobs", NULL, &jobs);
		if (r < 0)
			return qmp_fail(aq, r, "query-jobs");
		const char *status = NULL, *error = NULL;
		for (size_t i = 0; jobs && i < json_object_array_length(jobs); i++) {
			struct json_object *j = json_object_array_get_idx(jobs, i);
			const char *id = member_str(j, "id");
			if (id && strcmp(id, job) == 0) {
				status = member_str(j, "status");
				error = member_str(j, "error");
			}
		}
		int done = status && strcmp(status, "concluded") == 0;
		if (done && error) {
			log_error("VM %s: formatting the scratch overlay failed: %s",
				  aq->p->ship.vm, error);
			r = -EIO;
		}
		json_object_put(jobs);
		if (done || !status)
			break;
		if (ferry_mono_ns() > deadline)
			return log_error_errno(-ETIMEDOUT, "VM %s: formatting the scratch overlay",
					       aq->p->ship.vm);
		struct timespec ts = { 0, 2 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	try_run(aq, "job-dismiss", "{\"id\": \"%s\"}", job);
	if (r < 0)
		return r;
	r = run(aq, NULL, "blockdev-add",
		"{\"driver\": \"qcow2\", \"node-name\": \"%s\", \"file\": \"%s\", "
		"\"backing\": \"%s\"}",
		d->view_node, d->file_node, d->node);
	return r < 0 ? qmp_fail(aq, r, "cannot open the fleecing view") : 0;
}

/* ---- recovery: what qemu holds at (re)connection ---- */

static struct json_object *find_node(struct json_object *nodes, const char *name)
{
	for (size_t i = 0; nodes && i < json_object_array_length(nodes); i++) {
		struct json_object *n = json_object_array_get_idx(nodes, i);
		const char *nn = member_str(n, "node-name");
		if (nn && strcmp(nn, name) == 0)
			return n;
	}
	return NULL;
}

/*
 * Reads each disk's size, format and bitmaps. The recording bitmap of
 * the newest generation carries on; every other one of ours (the frozen
 * bitmap of a cycle that did not finish) is merged into it and removed.
 * A disk without one, or with an inconsistent one, gets a full cycle.
 */
static int recover(struct agent_qemu *aq)
{
	struct json_object *nodes = NULL;
	int r = run(aq, &nodes, "query-named-block-nodes", "{\"flat\": true}");
	if (r < 0)
		return qmp_fail(aq, r, "cannot list qemu's block nodes");
	uint64_t gen = 0;
	for (size_t i = 0; r >= 0 && i < aq->p->ship.ndisks; i++) {
		struct qdisk *d = &aq->disks[i];
		(void)drop_view(aq, d);
		struct json_object *n = find_node(nodes, d->node);
		if (!n) {
			r = log_error_errno(-ENOENT, "VM %s: qemu has no block node '%s' (disk %s)",
					    aq->p->ship.vm, d->node, d->name);
			break;
		}
		struct json_object *image = member(n, "image");
		struct json_object *vs = member(image, "virtual-size");
		d->vd->size = vs ? (uint64_t)json_object_get_int64(vs) : 0;
		const char *drv = member_str(n, "drv");
		d->persistent = drv && strcmp(drv, "qcow2") == 0;
		if (d->vd->size == 0) {
			r = log_error_errno(-EINVAL, "VM %s: disk %s (node %s) has no size",
					    aq->p->ship.vm, d->name, d->node);
			break;
		}
		struct json_object *bitmaps = member(n, "dirty-bitmaps");
		for (size_t b = 0; bitmaps && b < json_object_array_length(bitmaps); b++) {
			struct json_object *bm = json_object_array_get_idx(bitmaps, b);
			const char *name = member_str(bm, "name");
			struct json_object *rec = member(bm, "recording");
			uint64_t g = name ? bitmap_gen(aq, name) : 0;
			if (g && rec && json_object_get_boolean(rec))
				gen = MAX(gen, g);
		}
	}
	/* One generation for all disks; a disk whose recording bitmap is not
	 * that one, or is inconsistent, starts over with a full read. */
	for (size_t i = 0; r >= 0 && i < aq->p->ship.ndisks; i++) {
		struct qdisk *d = &aq->disks[i];
		struct json_object *bitmaps = member(find_node(nodes, d->node), "dirty-bitmaps");
		char cur[64];
		bitmap_name(aq, gen, cur, sizeof(cur));
		int have = 0;
		for (size_t b = 0; bitmaps && b < json_object_array_length(bitmaps); b++) {
			struct json_object *bm = json_object_array_get_idx(bitmaps, b);
			const char *name = member_str(bm, "name");
			if (gen && name && strcmp(name, cur) == 0) {
				struct json_object *inc = member(bm, "inconsistent");
				have = !(inc && json_object_get_boolean(inc));
			}
		}
		d->has_cur = have;
		d->vd->full = !have;
		if (!have && gen)
			try_run(aq, "block-dirty-bitmap-remove",
				"{\"node\": \"%s\", \"name\": \"%s\"}", d->node, cur);
		for (size_t b = 0; r >= 0 && bitmaps && b < json_object_array_length(bitmaps);
		     b++) {
			const char *name =
				member_str(json_object_array_get_idx(bitmaps, b), "name");
			uint64_t g = name ? bitmap_gen(aq, name) : 0;
			if (!g || g == gen)
				continue;
			if (have) {
				log_info("VM %s: disk %s: merging bitmap %s of an unfinished cycle",
					 aq->p->ship.vm, d->name, name);
				r = run(aq, NULL, "block-dirty-bitmap-merge",
					"{\"node\": \"%s\", \"target\": \"%s\", \"bitmaps\": "
					"[\"%s\"]}",
					d->node, cur, name);
				if (r < 0) {
					qmp_fail(aq, r, "cannot merge a leftover bitmap");
					break;
				}
			}
			try_run(aq, "block-dirty-bitmap-remove",
				"{\"node\": \"%s\", \"name\": \"%s\"}", d->node, name);
		}
	}
	json_object_put(nodes);
	if (r >= 0)
		aq->gen = gen;
	return r;
}

/* What the recording bitmaps hold now: bytes written since the cut,
 * waiting for the next cycle. UINT64_MAX when qemu cannot say. */
static uint64_t waiting_bytes(struct agent_qemu *aq)
{
	struct json_object *nodes = NULL;
	if (!aq->q || run(aq, &nodes, "query-named-block-nodes", "{\"flat\": true}") < 0)
		return UINT64_MAX;
	char cur[64];
	bitmap_name(aq, aq->gen, cur, sizeof(cur));
	uint64_t sum = 0;
	for (size_t i = 0; i < aq->p->ship.ndisks; i++) {
		struct json_object *bitmaps =
			member(find_node(nodes, aq->disks[i].node), "dirty-bitmaps");
		for (size_t b = 0; bitmaps && b < json_object_array_length(bitmaps); b++) {
			struct json_object *bm = json_object_array_get_idx(bitmaps, b);
			const char *name = member_str(bm, "name");
			struct json_object *count = member(bm, "count");
			if (name && count && strcmp(name, cur) == 0)
				sum += (uint64_t)MAX(json_object_get_int64(count), INT64_C(0));
		}
	}
	json_object_put(nodes);
	return sum;
}

static int connect_qemu(struct agent_qemu *aq)
{
	if (aq->q && !aq->need_recover)
		return 0;
	if (aq->q) {
		int r = recover(aq);
		aq->need_recover = r < 0;
		return r;
	}
	int r = qmp_connect(aq->p->qmp_path, aq->p->qmp_timeout_ms ?: 10000, &aq->q);
	if (r < 0)
		return log_error_errno(r, "VM %s: cannot reach qemu's QMP socket %s%s",
				       aq->p->ship.vm, aq->p->qmp_path,
				       r == -EBUSY ?
					       " (another client holds it: give Ferry a monitor "
					       "of its own)" :
					       "");
	aq->nbd_started = 0;
	r = recover(aq);
	if (r < 0)
		aq->q = qmp_free(aq->q);
	aq->need_recover = 0;
	return r;
}

/*
 * qemu runs one NBD server. The agent starts it on a socket of its own for
 * each cycle and stops it after. One found running is this agent's own when
 * its socket is there (a killed agent left it): restarted. Anybody else's
 * is not taken over: the cycle fails with a clear error.
 */
static int start_nbd(struct agent_qemu *aq)
{
	if (aq->p->nbd_socket)
		return 0; /* somebody else's server, named by the configuration */
	char path[PATH_MAX + 64];
	struct stat st;
	int ours = stat(aq->nbd_sock, &st) == 0 && S_ISSOCK(st.st_mode);
	int r = run(aq, NULL, "nbd-server-start",
		    "{\"addr\": {\"type\": \"unix\", \"data\": {\"path\": %s}}}",
		    quoted(aq->nbd_sock, path, sizeof(path)));
	if (r == -EREMOTEIO && strstr(qmp_last_error(aq->q), "already running") && ours) {
		try_run(aq, "nbd-server-stop", "{}");
		(void)unlink(aq->nbd_sock);
		r = run(aq, NULL, "nbd-server-start",
			"{\"addr\": {\"type\": \"unix\", \"data\": {\"path\": %s}}}", path);
	}
	if (r == -EREMOTEIO && strstr(qmp_last_error(aq->q), "already running"))
		return log_error_errno(
			-EBUSY,
			"VM %s: qemu already runs an NBD server that is not Ferry's; "
			"Ferry needs qemu's NBD server for itself while it reads",
			aq->p->ship.vm);
	if (r < 0)
		return qmp_fail(aq, r, "cannot start qemu's NBD server");
	aq->nbd_started = 1;
	return 0;
}

static void stop_nbd(struct agent_qemu *aq)
{
	if (!aq->nbd_started)
		return;
	try_run(aq, "nbd-server-stop", "{}");
	(void)unlink(aq->nbd_sock);
	aq->nbd_started = 0;
}

/* ---- one cycle ---- */

/* The cut: one transaction over every disk. */
static int cut(struct agent_qemu *aq, const char *cur, const char *next)
{
	struct json_object *actions = json_object_new_array();
	if (!actions)
		return -ENOMEM;
	for (size_t i = 0; i < aq->p->ship.ndisks; i++) {
		struct qdisk *d = &aq->disks[i];
		char json[512];
		snprintf(
			json, sizeof(json),
			"{\"type\": \"blockdev-backup\", \"data\": {\"device\": \"%s\", \"target\": "
			"\"%s\", \"sync\": \"none\", \"job-id\": \"%s\", \"auto-dismiss\": true}}",
			d->node, d->view_node, d->job);
		json_object_array_add(actions, json_tokener_parse(json));
		if (cur && d->has_cur) {
			snprintf(json, sizeof(json),
				 "{\"type\": \"block-dirty-bitmap-disable\", \"data\": {\"node\": "
				 "\"%s\", \"name\": \"%s\"}}",
				 d->node, cur);
			json_object_array_add(actions, json_tokener_parse(json));
		}
		snprintf(json, sizeof(json),
			 "{\"type\": \"block-dirty-bitmap-add\", \"data\": {\"node\": \"%s\", "
			 "\"name\": \"%s\", \"granularity\": %u, \"persistent\": %s}}",
			 d->node, next, BLOCK, d->persistent ? "true" : "false");
		json_object_array_add(actions, json_tokener_parse(json));
	}
	struct json_object *args = json_object_new_object();
	if (!args) {
		json_object_put(actions);
		return -ENOMEM;
	}
	json_object_object_add(args, "actions", actions);
	int r = qmp_execute(aq->q, "transaction", args, NULL);
	return r < 0 ? qmp_fail(aq, r, "the cut (QMP transaction) failed") : 0;
}

static void group_skipped(struct agent_qemu *aq, uint64_t round, const char *why)
{
	log_warning("VM %s: group %s, round %" PRIu64 " skipped: %s", aq->p->ship.vm,
		    aq->p->group->group, round, why);
	snprintf(aq->st.group_skipped, sizeof(aq->st.group_skipped), "%s", why);
}

/* The group's round due now, once every member is ready for it (step 1 of
 * groupcut.h; an app-consistent cut has frozen the guest already, so that
 * ready means ready to pause at once); 0 when none is due, or the round is
 * skipped, or the agent has just started. */
static uint64_t group_ready(struct agent_qemu *aq)
{
	const struct groupcut_params *g = aq->p->group;
	if (!g)
		return 0;
	uint64_t round = groupcut_round(g, ferry_now_ns());
	if (round <= aq->group_round)
		return 0;
	char why[256] = "";
	if (!aq->group_round) {
		/* The records of this round may be an earlier agent's, of this
		 * VM, that died in it: they must not count for this one. */
		aq->group_round = round;
		snprintf(why, sizeof(why), "the agent of %s (re)started in it", aq->p->ship.vm);
		groupcut_abort(g, round, why);
		group_skipped(aq, round, why);
		return 0;
	}
	aq->group_round = round;
	if (groupcut_ready(g, round, why, sizeof(why)) < 0) {
		group_skipped(aq, round, why);
		return 0;
	}
	return round;
}

/* What the watchdog allows beyond the pause limit: the limit bounds the
 * wait for the other members, this the cut that follows it. */
#define PAUSE_WD_MARGIN_MS 1000

/*
 * The group's cut of round, every member ready: the cut with the VM paused
 * while every member is. Returns 1 and the round's instant in *marker_ns
 * when the cut is the group's; 0 when the cut was made but is not the
 * group's (the watchdog resumed the VM first); -EAGAIN when the round was
 * given up before the cut (a warning says why: the cycle cuts alone, as
 * any other); another -errno when the cut itself failed. The VM runs again
 * whatever happens: the agent resumes it, and the watchdog does if the
 * agent dies or hangs while it is paused, or cannot resume it.
 */
static int group_cut(struct agent_qemu *aq, uint64_t round, const char *cur, const char *next,
		     int64_t *marker_ns)
{
	const struct groupcut_params *g = aq->p->group;
	int limit = g->pause_limit_ms > 0 ? g->pause_limit_ms : 2000;
	char why[256] = "";
	struct pausewd *wd = NULL;
	int r = pausewd_start(qmp_fd(aq->q), limit + PAUSE_WD_MARGIN_MS, &wd);
	if (r < 0) {
		snprintf(why, sizeof(why), "cannot start the pause watchdog: %s", strerror(-r));
		groupcut_abort(g, round, why);
		group_skipped(aq, round, why);
		return -EAGAIN;
	}
	int64_t mono = ferry_mono_ns();
	r = run(aq, NULL, "stop", "{}");
	/* After the stop: from here on the VM runs no instruction. */
	int64_t paused_ns = ferry_now_ns(), t = 0;
	if (r < 0)
		snprintf(why, sizeof(why), "cannot pause the VM: %s", qmp_last_error(aq->q));
	else
		r = groupcut_paused(g, round, paused_ns, &t, why, sizeof(why));
	int cut_r = r >= 0 ? cut(aq, cur, next) : -EAGAIN;
	/* Resume before the watchdog is told: if the agent's cont fails, the
	 * watchdog's comes at the limit. */
	int k = aq->q ? run(aq, NULL, "cont", "{}") : -ENOTCONN;
	if (k < 0)
		log_error("VM %s: cannot resume it after the group's cut (the watchdog will): %s",
			  aq->p->ship.vm, aq->q ? qmp_last_error(aq->q) : strerror(-k));
	int held = k >= 0 ? pausewd_finish(wd) : (pausewd_finish_later(wd), 0);
	aq->st.group_pause_ns = ferry_mono_ns() - mono;
	if (r < 0) {
		if (r != -EAGAIN)
			groupcut_abort(g, round, why);
		group_skipped(aq, round, why);
		return -EAGAIN;
	}
	if (cut_r < 0) {
		groupcut_abort(g, round, "the cut failed");
		return cut_r;
	}
	if (held <= 0) {
		snprintf(why, sizeof(why),
			 "the VM ran again before the cut was known to be done (pause limit %d ms)",
			 limit);
		groupcut_abort(g, round, why);
		group_skipped(aq, round, why);
		return 0;
	}
	groupcut_done(g, round);
	*marker_ns = t;
	aq->st.group_round = round;
	log_info("VM %s: group %s, round %" PRIu64 ": cut with every member, paused %.1f ms",
		 aq->p->ship.vm, g->group, round, (double)aq->st.group_pause_ns / 1e6);
	return 1;
}

/* The cut of a cycle: the group's for a round whose members are all ready
 * (round > 0), else this VM's alone. Returns 1 for a group cut (the marker
 * time is the round's instant), 0 for a lone one, -errno when it failed. */
static int cut_cycle(struct agent_qemu *aq, uint64_t round, const char *cur, const char *next,
		     int64_t *marker_ns)
{
	if (round) {
		int r = group_cut(aq, round, cur, next, marker_ns);
		if (r != -EAGAIN)
			return r;
	}
	int r = cut(aq, cur, next);
	return r < 0 ? r : 0;
}

/* ---- app-consistent cuts ---- */

/* Freezes the guest for the cut; NULL (failure recorded) when it could
 * not. */
static struct freeze *app_freeze(struct agent_qemu *aq)
{
	aq->app.attempt_ns = ferry_now_ns();
	char why[256] = "";
	struct freeze *f = NULL;
	int r = freeze_begin(aq->p->qga_path, aq->p->freeze_limit_ms, &f, why, sizeof(why));
	if (r < 0) {
		viewship_app_failed(&aq->app, aq->p->ship.vm, r, "cannot freeze the guest: %s",
				    why);
		return NULL;
	}
	return f;
}

/* Thaws the guest after the cut (cut_ok: the cut succeeded); 1 when the
 * freeze held throughout it. */
static int app_thaw(struct agent_qemu *aq, struct freeze *f, int cut_ok)
{
	struct freeze_report rep;
	int r = freeze_end(f, &rep);
	if (r < 0) {
		viewship_app_failed(&aq->app, aq->p->ship.vm, r, "the thaw failed: %s",
				    rep.message);
		log_error("VM %s: the guest may still be frozen: %s", aq->p->ship.vm, rep.message);
		return 0;
	}
	if (!rep.held) {
		viewship_app_failed(&aq->app, aq->p->ship.vm, -ETIMEDOUT, "%s", rep.message);
		return 0;
	}
	if (!cut_ok) {
		viewship_app_failed(&aq->app, aq->p->ship.vm, -EIO,
				    "the cut failed while the guest was frozen");
		return 0;
	}
	log_info("VM %s: app-consistent cut: the guest was frozen for %.1f ms (its freeze took "
		 "%.1f ms, hook and sync; %d file systems)",
		 aq->p->ship.vm, (double)rep.window_ns / 1e6, (double)rep.freeze_ns / 1e6,
		 rep.frozen_fs);
	return 1;
}

void agent_qemu_want_app(struct agent_qemu *aq)
{
	aq->app.want = aq->p->qga_path != NULL;
}

static int export_view(struct agent_qemu *aq, struct qdisk *d, const char *cur)
{
	int r;
	if (d->vd->full)
		r = run(aq, NULL, "block-export-add",
			"{\"type\": \"nbd\", \"id\": \"%s\", \"node-name\": \"%s\", \"name\": "
			"\"%s\", \"writable\": false}",
			d->export, d->view_node, d->export);
	else
		r = run(aq, NULL, "block-export-add",
			"{\"type\": \"nbd\", \"id\": \"%s\", \"node-name\": \"%s\", \"name\": "
			"\"%s\", \"writable\": false, \"bitmaps\": [{\"node\": \"%s\", "
			"\"name\": \"%s\"}]}",
			d->export, d->view_node, d->export, d->node, cur);
	return r < 0 ? qmp_fail(aq, r, "cannot export the view over NBD") : 0;
}

int agent_qemu_cycle(struct agent_qemu *aq, struct agent_scan_stats *ret)
{
	const struct agent_qemu_params *p = aq->p;
	uint64_t cycle = aq->st.cycle;
	uint64_t total = aq->st.total_shipped_bytes;
	aq->st = (struct agent_scan_stats){ .cycle = cycle + 1,
					    .total_shipped_bytes = total,
					    .started_ns = ferry_now_ns() };
	int r = connect_qemu(aq);
	if (r >= 0)
		r = viewship_begin(aq->vs, &aq->st);
	for (size_t i = 0; r >= 0 && i < p->ship.ndisks; i++)
		r = viewship_open_fingerprints(aq->vs, aq->disks[i].vd,
					       "lost its dirty bitmap (qemu restarted?)");
	if (r >= 0)
		r = start_nbd(aq);
	for (size_t i = 0; r >= 0 && i < p->ship.ndisks; i++) {
		aq->st.disk_bytes += aq->disks[i].vd->size;
		r = make_view(aq, &aq->disks[i]);
	}
	char cur[64], next[64];
	bitmap_name(aq, aq->gen, cur, sizeof(cur));
	bitmap_name(aq, aq->gen + 1, next, sizeof(next));
	/* The views exist, every member of the group is ready: the guest is
	 * frozen for the cut alone. */
	struct freeze *frozen = r >= 0 && aq->app.want ? app_freeze(aq) : NULL;
	aq->app.want = 0;
	uint64_t round = r >= 0 ? group_ready(aq) : 0;
	int64_t marker_ns = ferry_now_ns();
	int group = 0;
	if (r >= 0)
		r = group = cut_cycle(aq, round, aq->gen ? cur : NULL, next, &marker_ns);
	int app = frozen ? app_thaw(aq, frozen, r >= 0) : 0;
	int cut_done = r >= 0, shipped = 0;
	uint64_t old = aq->gen;
	if (cut_done) {
		/* From here on the next bitmap records; the current one (frozen)
		 * goes only once its changes are in the cache. */
		aq->gen++;
		for (size_t i = 0; r >= 0 && i < p->ship.ndisks; i++)
			r = export_view(aq, &aq->disks[i], cur);
		for (size_t i = 0; r >= 0 && i < p->ship.ndisks; i++)
			r = viewship_read(aq->vs, aq->disks[i].vd, aq->nbd_sock,
					  aq->disks[i].export, old ? cur : NULL);
		if (r >= 0)
			r = viewship_marker(aq->vs,
					    app ? FERRY_CONSISTENCY_APP : FERRY_CONSISTENCY_CRASH,
					    marker_ns, group ? aq->group_round : 0);
		shipped = r >= 0;
	}
	if (app)
		viewship_app_shipped(&aq->app, shipped, r, marker_ns);
	for (size_t i = 0; aq->q && i < p->ship.ndisks; i++) {
		int k = drop_view(aq, &aq->disks[i]);
		if (r >= 0 && k < 0)
			r = k;
	}
	if (aq->q)
		stop_nbd(aq);
	/* The frozen bitmaps, once nothing uses them (an export holds its
	 * bitmap): their changes are in the cache. One that cannot go is
	 * merged at the next cycle, which ships its blocks again. */
	for (size_t i = 0; shipped && i < p->ship.ndisks; i++) {
		struct qdisk *d = &aq->disks[i];
		viewship_shipped(aq->vs, d->vd);
		if (old && d->has_cur &&
		    run(aq, NULL, "block-dirty-bitmap-remove",
			"{\"node\": \"%s\", \"name\": \"%s\"}", d->node, cur) < 0)
			aq->need_recover = 1;
		d->vd->full = 0;
		d->has_cur = 1;
	}
	if (r < 0 && cut_done)
		aq->need_recover = 1;
	if (r == -ECONNRESET || r == -EPIPE || r == -ENOTCONN || r == -EPROTO) {
		/* qemu went away (or restarted): reconnect and recover next time. */
		aq->q = qmp_free(aq->q);
	}
	viewship_end_stats(&aq->st, &aq->app, marker_ns);
	/* Asked after the cycle's own time: it is what the next one starts
	 * with. */
	aq->st.source_waiting_bytes = shipped && aq->gen ? waiting_bytes(aq) : UINT64_MAX;
	if (ret)
		*ret = aq->st;
	return r < 0 ? r : 1;
}

/* ---- setup ---- */

int agent_qemu_new(const struct agent_qemu_params *p, struct agent_qemu **ret)
{
	if (p->ship.ndisks == 0 || p->ship.ndisks > UINT16_MAX)
		return -EINVAL;
	for (size_t i = 0; i < p->ship.ndisks; i++)
		if (!node_name_valid(p->ship.disks[i].path))
			return log_error_errno(
				-EINVAL,
				"VM %s: disk %s: '%s' is not a qemu node name (letters, "
				"digits, '-', '_', '.', at most %d, starting with a letter)",
				p->ship.vm, p->ship.disks[i].name, p->ship.disks[i].path,
				NODE_NAME_MAX);
	_cleanup_free_ struct agent_qemu *aq = calloc(1, sizeof(*aq));
	if (!aq)
		return -ENOMEM;
	aq->p = p;
	struct ferry_id h;
	ferry_sha256(p->ship.vm, strlen(p->ship.vm), &h);
	snprintf(aq->hash, sizeof(aq->hash), "%02x%02x%02x%02x", h.b[0], h.b[1], h.b[2], h.b[3]);
	if (p->nbd_socket ? !(aq->nbd_sock = strdup(p->nbd_socket)) :
			    asprintf(&aq->nbd_sock, "%s/nbd.sock", p->ship.state_dir) < 0)
		return -ENOMEM;
	if (strlen(aq->nbd_sock) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
		int r = log_error_errno(
			-ENAMETOOLONG,
			"VM %s: the state directory %s is too long a path for the NBD "
			"socket (at most %zu bytes): choose a shorter one",
			p->ship.vm, p->ship.state_dir,
			sizeof(((struct sockaddr_un *)0)->sun_path) - 10);
		free(aq->nbd_sock);
		return r;
	}
	aq->disks = calloc(p->ship.ndisks, sizeof(*aq->disks));
	int r = aq->disks ? viewship_new(&p->ship, &aq->vs) : -ENOMEM;
	for (size_t i = 0; r >= 0 && i < p->ship.ndisks; i++) {
		struct qdisk *d = &aq->disks[i];
		d->name = p->ship.disks[i].name;
		d->node = p->ship.disks[i].path;
		d->idx = (uint16_t)i;
		d->vd = viewship_disk(aq->vs, i);
		snprintf(d->file_node, sizeof(d->file_node), "fy%s-%hu-f", aq->hash, d->idx);
		snprintf(d->view_node, sizeof(d->view_node), "fy%s-%hu-v", aq->hash, d->idx);
		snprintf(d->job, sizeof(d->job), "fy%s-%hu-b", aq->hash, d->idx);
		snprintf(d->export, sizeof(d->export), "fy%s-%hu", aq->hash, d->idx);
		if (asprintf(&d->scratch, "%s/view-%zu.qcow2", p->ship.state_dir, i) < 0)
			r = -ENOMEM;
	}
	if (r < 0) {
		agent_qemu_free(TAKE_PTR(aq));
		return r;
	}
	*ret = TAKE_PTR(aq);
	return 0;
}

struct agent_qemu *agent_qemu_free(struct agent_qemu *aq)
{
	if (!aq)
		return NULL;
	qmp_free(aq->q);
	for (size_t i = 0; aq->disks && i < aq->p->ship.ndisks; i++) {
		free(aq->disks[i].scratch);
	}
	viewship_free(aq->vs);
	free(aq->disks);
	free(aq->nbd_sock);
	free(aq);
	return NULL;
}

void agent_qemu_resync(struct agent_qemu *aq, uint64_t base_seq, const struct ferry_id *prev,
		       int adopted)
{
	viewship_resync(aq->vs, base_seq, prev, adopted);
}
