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
#include "fpfile.h"
#include "nbdview.h"
#include "qmp.h"

#define BLOCK FERRY_BLOCK_SIZE
#define READ_MAX (1024u * 1024u)
#define SEGMENT_CUT (16u * 1024u * 1024u)
#define NODE_NAME_MAX 31
/* How long removing a job, an export or a node may take before the cycle
 * gives up on it (the next start cleans up again). */
#define SETTLE_NS (INT64_C(10) * 1000000000)

struct qdisk {
	const char *name, *node;
	uint16_t idx;
	uint64_t size;
	int persistent; /* qcow2: the bitmap survives a qemu restart */
	int has_cur;    /* qemu holds the recording bitmap of generation gen */
	int full;       /* read every allocated extent: no usable bitmap, or no
			 * full cycle completed yet (no fingerprint baseline) */
	int compare;    /* full, with fingerprints to ship only what differs */
	char file_node[NODE_NAME_MAX + 1], view_node[NODE_NAME_MAX + 1];
	char job[NODE_NAME_MAX + 1], export[NODE_NAME_MAX + 1];
	char *scratch;
	char *fp_path;
	struct fpfile *fp; /* fpfile.h */
	uint64_t fp_size;  /* the disk size fp was opened for */
};

/* A fingerprint update that waits for its segment to be in the cache. */
struct pending_fp {
	uint16_t disk;
	int zero;        /* blocks read as zeros: no fingerprints */
	uint64_t block;  /* first block */
	uint64_t n;      /* blocks */
	size_t first_fp; /* index into agent_qemu.pfps */
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

	/* Fingerprints of what the open segment carries, written once it is
	 * in the cache (fpfile.h). */
	struct pending_fp *pend;
	size_t npend, apend;
	struct ferry_fp *pfps;
	size_t npfps, apfps;

	/* the segment being filled */
	struct ferry_segment_writer *w;
	uint64_t next_seq;
	uint64_t first_seq; /* next_seq when the cycle began */
	struct ferry_id prev;
	/* A resync's base (agent_qemu_resync): the chain goes on after it
	 * until the cache holds something newer. */
	uint64_t base_seq;
	struct ferry_id base_prev;
	int declared;
	uint8_t *buf;
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
		log_error("VM %s: %s: qemu says: %s", aq->p->vm, what, qmp_last_error(aq->q));
	else
		log_error_errno(r, "VM %s: %s", aq->p->vm, what);
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
			return log_error_errno(-ETIMEDOUT, "VM %s: %s still lists %s", aq->p->vm,
					       query, id);
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
		log_warning("VM %s: cannot remove %s: %m", aq->p->vm, d->scratch);
	return r;
}

/* The scratch overlay: an empty qcow2 as large as the disk, formatted by
 * qemu itself (blockdev-create), backed by the disk. */
static int make_view(struct agent_qemu *aq, struct qdisk *d)
{
	_cleanup_close_ int fd = open(d->scratch, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return log_error_errno(-errno, "VM %s: cannot create %s", aq->p->vm, d->scratch);
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
		job, d->file_node, d->size);
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
			log_error("VM %s: formatting the scratch overlay failed: %s", aq->p->vm,
				  error);
			r = -EIO;
		}
		json_object_put(jobs);
		if (done || !status)
			break;
		if (ferry_mono_ns() > deadline)
			return log_error_errno(-ETIMEDOUT, "VM %s: formatting the scratch overlay",
					       aq->p->vm);
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
	for (size_t i = 0; r >= 0 && i < aq->p->ndisks; i++) {
		struct qdisk *d = &aq->disks[i];
		(void)drop_view(aq, d);
		struct json_object *n = find_node(nodes, d->node);
		if (!n) {
			r = log_error_errno(-ENOENT, "VM %s: qemu has no block node '%s' (disk %s)",
					    aq->p->vm, d->node, d->name);
			break;
		}
		struct json_object *image = member(n, "image");
		struct json_object *vs = member(image, "virtual-size");
		d->size = vs ? (uint64_t)json_object_get_int64(vs) : 0;
		const char *drv = member_str(n, "drv");
		d->persistent = drv && strcmp(drv, "qcow2") == 0;
		if (d->size == 0) {
			r = log_error_errno(-EINVAL, "VM %s: disk %s (node %s) has no size",
					    aq->p->vm, d->name, d->node);
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
	for (size_t i = 0; r >= 0 && i < aq->p->ndisks; i++) {
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
		d->full = !have;
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
					 aq->p->vm, d->name, name);
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
	for (size_t i = 0; i < aq->p->ndisks; i++) {
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
		return log_error_errno(r, "VM %s: cannot reach qemu's QMP socket %s%s", aq->p->vm,
				       aq->p->qmp_path,
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
			aq->p->vm);
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

/* ---- segments ---- */

static int segment_open(struct agent_qemu *aq)
{
	if (aq->w && aq->declared)
		return 0;
	int r = aq->w ? ferry_segment_writer_reset(aq->w, aq->next_seq, &aq->prev) :
			ferry_segment_writer_new(aq->p->vm, aq->next_seq, &aq->prev, &aq->w);
	if (r >= 0 && aq->p->chunk_size)
		r = ferry_segment_writer_set_chunking(aq->w, aq->p->chunk_size);
	if (r < 0)
		return log_error_errno(r, "VM %s: cannot start segment %" PRIu64, aq->p->vm,
				       aq->next_seq);
	ferry_segment_writer_set_workers(aq->w, aq->p->compress_workers);
	for (size_t i = 0; r >= 0 && i < aq->p->ndisks; i++)
		r = ferry_segment_writer_add_disk(aq->w, aq->disks[i].idx, aq->disks[i].name,
						  aq->disks[i].size);
	aq->declared = r >= 0;
	return r;
}

static int pend_add(struct agent_qemu *aq, uint16_t disk, int zero, uint64_t block, uint64_t n,
		    const struct ferry_fp *fps)
{
	if (aq->npend == aq->apend) {
		size_t k = aq->apend ? aq->apend * 2 : 64;
		struct pending_fp *a = realloc(aq->pend, k * sizeof(*a));
		if (!a)
			return -ENOMEM;
		aq->pend = a;
		aq->apend = k;
	}
	if (!zero && aq->npfps + n > aq->apfps) {
		size_t k = MAX(aq->apfps * 2, aq->npfps + n);
		struct ferry_fp *a = realloc(aq->pfps, k * sizeof(*a));
		if (!a)
			return -ENOMEM;
		aq->pfps = a;
		aq->apfps = k;
	}
	aq->pend[aq->npend++] = (struct pending_fp){ disk, zero, block, n, aq->npfps };
	if (!zero) {
		memcpy(aq->pfps + aq->npfps, fps, n * sizeof(*fps));
		aq->npfps += n;
	}
	return 0;
}

/* The segment just put carries these blocks: their fingerprints may say
 * so now. A failure here only costs blocks shipped again after a lost
 * bitmap, so it is logged, not fatal. */
static void pend_apply(struct agent_qemu *aq)
{
	for (size_t i = 0; i < aq->npend; i++) {
		const struct pending_fp *e = &aq->pend[i];
		struct qdisk *d = &aq->disks[e->disk];
		int r = e->zero ?
				fpfile_zero(d->fp, e->block, e->n) :
				fpfile_put(d->fp, e->block, (uint32_t)e->n, aq->pfps + e->first_fp);
		if (r < 0)
			log_warning_errno(r, "VM %s: disk %s: cannot record fingerprints in %s",
					  aq->p->vm, d->name, d->fp_path);
	}
	aq->npend = aq->npfps = 0;
}

static int segment_put(struct agent_qemu *aq)
{
	_cleanup_free_ void *buf = NULL;
	size_t len;
	struct ferry_segment_info info;
	int r = ferry_segment_writer_finish(aq->w, &buf, &len, &info);
	if (r < 0)
		return log_error_errno(r, "VM %s: cannot encode segment %" PRIu64, aq->p->vm,
				       aq->next_seq);
	r = ferry_cache_put_segment(aq->p->cache, aq->p->vm, aq->next_seq, buf, len);
	if (r < 0)
		return log_error_errno(r, "VM %s: cannot put segment %" PRIu64 " into %s",
				       aq->p->vm, aq->next_seq, ferry_cache_url(aq->p->cache));
	aq->st.seq = aq->next_seq;
	aq->st.segments++;
	aq->next_seq++;
	aq->prev = info.digest;
	aq->declared = 0;
	pend_apply(aq);
	return 0;
}

static int segment_maybe_cut(struct agent_qemu *aq)
{
	return ferry_segment_writer_size(aq->w) >= SEGMENT_CUT ? segment_put(aq) : 0;
}

/* Where the chain stands: after the newest of the acknowledged segment and
 * the segments waiting in the cache. */
static int chain_position(struct agent_qemu *aq)
{
	struct ferry_chain_head h;
	int r = ferry_cache_chain_head(aq->p->cache, aq->p->vm, 0, &h);
	if (r < 0)
		return log_error_errno(r, "VM %s: cannot find where its segment chain stands in %s",
				       aq->p->vm, ferry_cache_url(aq->p->cache));
	aq->next_seq = (h.top_seq ?: h.ack.seq) + 1;
	aq->prev = h.top_seq ? h.top_digest : h.ack.digest;
	if (aq->base_seq >= aq->next_seq) {
		aq->next_seq = aq->base_seq + 1;
		aq->prev = aq->base_prev;
	}
	return 0;
}

/* ---- reading one view ---- */

struct reader {
	struct agent_qemu *aq;
	struct qdisk *d;
	struct nbdview *v;
	int first; /* the chain's first cycle: the target starts empty */
};

static int add_zero(struct agent_qemu *aq, struct qdisk *d, uint64_t off, uint64_t end)
{
	int r = segment_open(aq);
	if (r >= 0)
		r = ferry_segment_writer_add_zero(aq->w, d->idx, off, end - off);
	if (r >= 0)
		r = pend_add(aq, d->idx, 1, off / BLOCK, (end - off) / BLOCK, NULL);
	aq->st.zeroed_bytes += end - off;
	return r < 0 ? r : segment_maybe_cut(aq);
}

/*
 * A range that reads as zeros in a full cycle. Nothing to ship for a target
 * that starts empty (the chain's first cycle); against fingerprints, ZERO
 * for the blocks that held data; without them, ZERO for all of it.
 */
static int full_zero(struct agent_qemu *aq, struct qdisk *d, uint64_t off, uint64_t end, int first)
{
	if (first)
		return 0;
	if (!d->compare)
		return add_zero(aq, d, off, end);
	struct ferry_fp fps[4096];
	for (uint64_t b = off / BLOCK; b < end / BLOCK;) {
		uint32_t k = (uint32_t)MIN((uint64_t)ARRAY_SIZE(fps), end / BLOCK - b);
		int r = fpfile_get(d->fp, b, k, fps);
		if (r < 0)
			return r;
		for (uint32_t i = 0; i < k;) {
			if (!fps[i].lo && !fps[i].hi) {
				i++;
				continue;
			}
			uint32_t j = i + 1;
			while (j < k && (fps[j].lo || fps[j].hi))
				j++;
			r = add_zero(aq, d, (b + i) * BLOCK, (b + j) * BLOCK);
			if (r < 0)
				return r;
			i = j;
		}
		b += k;
	}
	return 0;
}

static int on_extent(uint64_t off, uint64_t len, enum nbdview_kind kind, void *userdata)
{
	struct reader *rd = userdata;
	struct agent_qemu *aq = rd->aq;
	struct qdisk *d = rd->d;
	uint64_t end =
		MIN(DIV_ROUND_UP(off + len, BLOCK) * BLOCK, DIV_ROUND_UP(d->size, BLOCK) * BLOCK);
	int r;
	if (aq->p->stop && *aq->p->stop)
		return -EINTR;
	if (kind == NBDVIEW_SKIP)
		return d->full ? full_zero(aq, d, off, end, rd->first) : 0;
	if (kind == NBDVIEW_ZERO)
		return add_zero(aq, d, off, end);
	struct ferry_fp fps[READ_MAX / BLOCK], old[READ_MAX / BLOCK];
	while (len > 0) {
		size_t n = (size_t)MIN((uint64_t)READ_MAX, len);
		r = nbdview_read(rd->v, aq->buf, n, off);
		if (r < 0)
			return log_error_errno(r,
					       "VM %s: disk %s: NBD read at %" PRIu64 " failed: %s",
					       aq->p->vm, d->name, off, nbdview_last_error(rd->v));
		aq->st.scanned_bytes += n;
		/* A run may end at a disk size that is not a multiple of 4 KiB:
		 * the record covers whole blocks, the tail reads as zeros. */
		uint32_t nb = (uint32_t)DIV_ROUND_UP(n, BLOCK);
		if ((size_t)nb * BLOCK > n)
			memset(aq->buf + n, 0, (size_t)nb * BLOCK - n);
		for (uint32_t i = 0; i < nb; i++)
			fpfile_block(aq->buf + (size_t)i * BLOCK, &fps[i]);
		if (d->compare) {
			r = fpfile_get(d->fp, off / BLOCK, nb, old);
			if (r < 0)
				return log_error_errno(r, "VM %s: disk %s: cannot read %s",
						       aq->p->vm, d->name, d->fp_path);
		}
		/* Runs of blocks to ship: all of them, or after a lost bitmap
		 * those whose fingerprint differs from what was shipped. */
		for (uint32_t i = 0; i < nb;) {
			if (d->compare && fps[i].lo == old[i].lo && fps[i].hi == old[i].hi) {
				i++;
				continue;
			}
			uint32_t j = i + 1;
			while (j < nb &&
			       !(d->compare && fps[j].lo == old[j].lo && fps[j].hi == old[j].hi))
				j++;
			r = segment_open(aq);
			if (r >= 0)
				r = ferry_segment_writer_add_data(aq->w, d->idx,
								  off + (uint64_t)i * BLOCK,
								  aq->buf + (size_t)i * BLOCK,
								  (uint64_t)(j - i) * BLOCK);
			if (r >= 0)
				r = pend_add(aq, d->idx, 0, off / BLOCK + i, j - i, fps + i);
			if (r < 0)
				return log_error_errno(r,
						       "VM %s: cannot add data to segment %" PRIu64,
						       aq->p->vm, aq->next_seq);
			aq->st.shipped_bytes += (uint64_t)(j - i) * BLOCK;
			r = segment_maybe_cut(aq);
			if (r < 0)
				return r;
			i = j;
		}
		off += n;
		len -= n;
	}
	return 0;
}

static int read_view(struct agent_qemu *aq, struct qdisk *d, const char *bitmap)
{
	struct reader rd = { aq, d, NULL, aq->first_seq == 1 };
	int r = nbdview_open(aq->nbd_sock, d->export, d->full ? NULL : bitmap, &rd.v);
	if (r < 0)
		return log_error_errno(r, "VM %s: disk %s: cannot read the view over NBD",
				       aq->p->vm, d->name);
	if (nbdview_size(rd.v) != d->size)
		r = log_error_errno(-EIO,
				    "VM %s: disk %s: the view has %" PRIu64
				    " bytes, the disk %" PRIu64,
				    aq->p->vm, d->name, nbdview_size(rd.v), d->size);
	if (r >= 0)
		r = nbdview_extents(rd.v, 0, d->size, on_extent, &rd);
	nbdview_free(rd.v);
	return r;
}

/* ---- one cycle ---- */

/* The disk's fingerprint file, for its size; decides whether a full
 * cycle of it can compare (fpfile.h). */
static int open_fingerprints(struct agent_qemu *aq, struct qdisk *d)
{
	if (!d->fp || d->fp_size != d->size) {
		d->fp = fpfile_free(d->fp);
		int r = fpfile_open(d->fp_path, d->size, &d->fp);
		if (r < 0)
			return log_error_errno(r, "VM %s: disk %s: cannot open %s", aq->p->vm,
					       d->name, d->fp_path);
		d->fp_size = d->size;
	}
	int baseline = fpfile_has_baseline(d->fp), due = fpfile_full_due(d->fp);
	/* The baseline also says that a full cycle of the disk completed: an
	 * agent killed in the first one reads it whole again, whatever bitmap
	 * it finds, or what it had not read yet would never be shipped. A
	 * resync's fingerprints (due) are compared with every block. */
	if (!baseline || due)
		d->full = 1;
	if (due) {
		log_info("VM %s: disk %s: resync: this cycle reads it whole and ships what differs "
			 "from the vault's image",
			 aq->p->vm, d->name);
		d->compare = 1;
		return 0;
	}
	d->compare = d->full && baseline;
	if (d->full && aq->next_seq > 1)
		log_warning("VM %s: disk %s %s: this cycle reads it whole%s", aq->p->vm, d->name,
			    d->has_cur ? "has no complete full cycle yet" :
					 "lost its dirty bitmap (qemu restarted?)",
			    d->compare ? " and ships what differs from its fingerprints" :
					 " and ships all of it (no fingerprints to compare)");
	return 0;
}

/* The cut: one transaction over every disk. */
static int cut(struct agent_qemu *aq, const char *cur, const char *next)
{
	struct json_object *actions = json_object_new_array();
	if (!actions)
		return -ENOMEM;
	for (size_t i = 0; i < aq->p->ndisks; i++) {
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

static int export_view(struct agent_qemu *aq, struct qdisk *d, const char *cur)
{
	int r;
	if (d->full)
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
		r = chain_position(aq);
	aq->first_seq = aq->next_seq;
	aq->npend = aq->npfps = 0;
	for (size_t i = 0; r >= 0 && i < p->ndisks; i++)
		r = open_fingerprints(aq, &aq->disks[i]);
	if (r >= 0)
		r = start_nbd(aq);
	for (size_t i = 0; r >= 0 && i < p->ndisks; i++) {
		aq->st.disk_bytes += aq->disks[i].size;
		r = make_view(aq, &aq->disks[i]);
	}
	char cur[64], next[64];
	bitmap_name(aq, aq->gen, cur, sizeof(cur));
	bitmap_name(aq, aq->gen + 1, next, sizeof(next));
	int64_t marker_ns = ferry_now_ns();
	if (r >= 0)
		r = cut(aq, aq->gen ? cur : NULL, next);
	int cut_done = r >= 0, shipped = 0;
	uint64_t old = aq->gen;
	if (cut_done) {
		/* From here on the next bitmap records; the current one (frozen)
		 * goes only once its changes are in the cache. */
		aq->gen++;
		for (size_t i = 0; r >= 0 && i < p->ndisks; i++)
			r = export_view(aq, &aq->disks[i], cur);
		aq->declared = 0;
		for (size_t i = 0; r >= 0 && i < p->ndisks; i++)
			r = read_view(aq, &aq->disks[i], old ? cur : NULL);
		if (r >= 0)
			r = segment_open(aq);
		if (r >= 0)
			r = ferry_segment_writer_add_marker(aq->w, FERRY_CONSISTENCY_CRASH,
							    marker_ns);
		if (r >= 0)
			r = segment_put(aq);
		shipped = r >= 0;
	}
	aq->declared = 0;
	for (size_t i = 0; aq->q && i < p->ndisks; i++) {
		int k = drop_view(aq, &aq->disks[i]);
		if (r >= 0 && k < 0)
			r = k;
	}
	if (aq->q)
		stop_nbd(aq);
	/* The frozen bitmaps, once nothing uses them (an export holds its
	 * bitmap): their changes are in the cache. One that cannot go is
	 * merged at the next cycle, which ships its blocks again. */
	for (size_t i = 0; shipped && i < p->ndisks; i++) {
		struct qdisk *d = &aq->disks[i];
		/* A full cycle, in the cache: every fingerprint now says what the
		 * chain holds. */
		if (d->full && (!fpfile_has_baseline(d->fp) || fpfile_full_due(d->fp))) {
			int k = fpfile_set_baseline(d->fp);
			if (k < 0)
				log_warning_errno(
					k, "VM %s: disk %s: cannot record the baseline in %s",
					p->vm, d->name, d->fp_path);
		}
		if (old && d->has_cur &&
		    run(aq, NULL, "block-dirty-bitmap-remove",
			"{\"node\": \"%s\", \"name\": \"%s\"}", d->node, cur) < 0)
			aq->need_recover = 1;
		d->full = 0;
		d->has_cur = 1;
	}
	if (r < 0 && cut_done)
		aq->need_recover = 1;
	if (r == -ECONNRESET || r == -EPIPE || r == -ENOTCONN || r == -EPROTO) {
		/* qemu went away (or restarted): reconnect and recover next time. */
		aq->q = qmp_free(aq->q);
	}
	aq->st.finished_ns = ferry_now_ns();
	/* Asked after the cycle's own time: it is what the next one starts
	 * with. */
	aq->st.source_waiting_bytes = shipped && aq->gen ? waiting_bytes(aq) : UINT64_MAX;
	aq->st.marker_time_ns = marker_ns;
	aq->st.cycle_shipped_bytes = aq->st.shipped_bytes;
	aq->st.cycle_segments = aq->st.segments;
	aq->st.total_shipped_bytes += aq->st.shipped_bytes;
	if (ret)
		*ret = aq->st;
	return r < 0 ? r : 1;
}

/* ---- setup ---- */

int agent_qemu_new(const struct agent_qemu_params *p, struct agent_qemu **ret)
{
	if (p->ndisks == 0 || p->ndisks > UINT16_MAX)
		return -EINVAL;
	for (size_t i = 0; i < p->ndisks; i++)
		if (!node_name_valid(p->disks[i].path))
			return log_error_errno(
				-EINVAL,
				"VM %s: disk %s: '%s' is not a qemu node name (letters, "
				"digits, '-', '_', '.', at most %d, starting with a letter)",
				p->vm, p->disks[i].name, p->disks[i].path, NODE_NAME_MAX);
	_cleanup_free_ struct agent_qemu *aq = calloc(1, sizeof(*aq));
	if (!aq)
		return -ENOMEM;
	aq->p = p;
	struct ferry_id h;
	ferry_sha256(p->vm, strlen(p->vm), &h);
	snprintf(aq->hash, sizeof(aq->hash), "%02x%02x%02x%02x", h.b[0], h.b[1], h.b[2], h.b[3]);
	if (p->nbd_socket ? !(aq->nbd_sock = strdup(p->nbd_socket)) :
			    asprintf(&aq->nbd_sock, "%s/nbd.sock", p->state_dir) < 0)
		return -ENOMEM;
	if (strlen(aq->nbd_sock) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
		int r = log_error_errno(
			-ENAMETOOLONG,
			"VM %s: the state directory %s is too long a path for the NBD "
			"socket (at most %zu bytes): choose a shorter one",
			p->vm, p->state_dir, sizeof(((struct sockaddr_un *)0)->sun_path) - 10);
		free(aq->nbd_sock);
		return r;
	}
	aq->disks = calloc(p->ndisks, sizeof(*aq->disks));
	aq->buf = malloc(READ_MAX + BLOCK);
	int r = aq->disks && aq->buf ? 0 : -ENOMEM;
	for (size_t i = 0; r >= 0 && i < p->ndisks; i++) {
		struct qdisk *d = &aq->disks[i];
		d->name = p->disks[i].name;
		d->node = p->disks[i].path;
		d->idx = (uint16_t)i;
		snprintf(d->file_node, sizeof(d->file_node), "fy%s-%hu-f", aq->hash, d->idx);
		snprintf(d->view_node, sizeof(d->view_node), "fy%s-%hu-v", aq->hash, d->idx);
		snprintf(d->job, sizeof(d->job), "fy%s-%hu-b", aq->hash, d->idx);
		snprintf(d->export, sizeof(d->export), "fy%s-%hu", aq->hash, d->idx);
		if (asprintf(&d->scratch, "%s/view-%zu.qcow2", p->state_dir, i) < 0 ||
		    asprintf(&d->fp_path, "%s/%s.qfp", p->state_dir, d->name) < 0)
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
	for (size_t i = 0; aq->disks && i < aq->p->ndisks; i++) {
		free(aq->disks[i].scratch);
		free(aq->disks[i].fp_path);
		fpfile_free(aq->disks[i].fp);
	}
	free(aq->pend);
	free(aq->pfps);
	free(aq->disks);
	free(aq->nbd_sock);
	free(aq->buf);
	ferry_segment_writer_free(aq->w);
	free(aq);
	return NULL;
}

void agent_qemu_resync(struct agent_qemu *aq, uint64_t base_seq, const struct ferry_id *prev,
		       int adopted)
{
	aq->base_seq = base_seq;
	aq->base_prev = *prev;
	/* The files were replaced: open the new ones. */
	for (size_t i = 0; adopted && i < aq->p->ndisks; i++)
		aq->disks[i].fp = fpfile_free(aq->disks[i].fp);
}
