/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The agent's lease, its state's place in the chain, and resync adoption
 * (agent-sync.h).
 *
 * How a state that no longer matches the chain is told apart from one
 * that does: the state identity file records the last marker this state
 * directory committed (head), and every lease the agent puts carries that
 * head. Within one state directory's history the lease never names a head
 * beyond the directory's own, however the agent is killed: the lease is
 * put after the identity file is. So, reading the lease at the start of a
 * cycle:
 *   - held by this identity with a head beyond ours: this directory is an
 *     older copy of itself (restored from a backup);
 *   - held by another identity, and the chain went beyond our head: another
 *     agent state shipped the VM meanwhile;
 *   - whoever holds it, our state is new and the vault holds a chain: the
 *     state was lost (or this is a new agent for a replicated VM);
 *   - the chain in the cache (acknowledged, waiting, or a resync's base)
 *     is behind our head: segments we shipped vanished unapplied.
 * Each of these asks the vault for a resync instead of shipping a cycle
 * whose comparisons would be wrong; the want is remembered in the identity
 * file until a resync is adopted.
 *
 * The lease is a record replaced whole: object stores give a conditional
 * create but no compare-and-swap, so the first take is exclusive and a
 * take-over is checked by reading the lease back. Two agents taking over an
 * expired lease within one round trip of each other may both see their own
 * lease and run one cycle; the next cycle of one of them is refused, and
 * their segments collide in exclusive puts meanwhile (a chain the
 * replicator refuses ends in a resync).
 */
#include "agent-sync.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ferry/control.h"
#include "ferry/log.h"
#include "ferry/util.h"
#include "fpfile.h"
#include "seed.h"

#define ID_MAGIC "FERRY-AGENT-IDENTITY"
#define ID_MAJOR 1
#define FP_HDR 64

struct identity {
	uint8_t id[FERRY_LEASE_ID_SIZE];
	uint64_t head;  /* the last marker this state committed; 0: none */
	uint64_t epoch; /* the last resync it adopted; 0: none */
	uint8_t wanted; /* a resync it asked for (enum ferry_want_reason); 0: none */
};

struct agent_sync {
	const struct agent_sync_params *p;
	char *path;
	pthread_mutex_t lock; /* me: the renewing thread reads it */
	struct identity me;
};

/* ---- the identity file ---- */

static void hex_of(const uint8_t *b, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		snprintf(out + 2 * i, 3, "%02x", b[i]);
}

static int identity_write(const struct agent_sync *s, const struct identity *me)
{
	char id[2 * FERRY_LEASE_ID_SIZE + 1], hex[FERRY_ID_HEX_SIZE];
	hex_of(me->id, sizeof(me->id), id);
	_cleanup_free_ char *body = NULL, *all = NULL;
	int n = asprintf(&body,
			 "%s %d\nvm=%s\nid=%s\nhead=%" PRIu64 "\nepoch=%" PRIu64 "\nwanted=%u\n",
			 ID_MAGIC, ID_MAJOR, s->p->vm, id, me->head, me->epoch, me->wanted);
	if (n < 0)
		return -ENOMEM;
	struct ferry_id sum;
	ferry_sha256(body, (size_t)n, &sum);
	int m = asprintf(&all, "%schecksum=%s\n", body, ferry_id_to_hex(&sum, hex));
	if (m < 0)
		return -ENOMEM;
	int r = ferry_write_file_atomic(s->path, all, (size_t)m);
	if (r < 0)
		return log_error_errno(r, "VM %s: cannot write %s", s->p->vm, s->path);
	return 0;
}

static int parse_id(const char *v, uint8_t id[FERRY_LEASE_ID_SIZE])
{
	if (strlen(v) != 2 * FERRY_LEASE_ID_SIZE)
		return -EBADMSG;
	int any = 0;
	for (size_t i = 0; i < FERRY_LEASE_ID_SIZE; i++) {
		int hi = ferry_hex_digit(v[2 * i]), lo = ferry_hex_digit(v[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return -EBADMSG;
		id[i] = (uint8_t)(hi << 4 | lo);
		any |= id[i];
	}
	return any ? 0 : -EBADMSG;
}

/* The text of an identity file (NUL-terminated, modified): -EBADMSG on
 * damage, -EPROTONOSUPPORT for an unknown major, -EXDEV for another VM's. */
static int identity_parse(char *text, size_t len, const char *vm, struct identity *ret)
{
	if (len == 0 || text[len - 1] != '\n' || strlen(text) != len)
		return -EBADMSG;
	text[len - 1] = 0;
	char *last = strrchr(text, '\n');
	struct ferry_id want, have;
	if (!last || strncmp(last + 1, "checksum=", 9) != 0 ||
	    ferry_id_from_hex(last + 10, &want) < 0)
		return -EBADMSG;
	ferry_sha256(text, (size_t)(last + 1 - text), &have);
	if (!ferry_id_equal(&want, &have))
		return -EBADMSG;
	*last = 0;
	char *save = NULL, *line = strtok_r(text, "\n", &save);
	size_t ml = strlen(ID_MAGIC);
	if (!line || strncmp(line, ID_MAGIC, ml) != 0 || line[ml] != ' ')
		return -EBADMSG;
	if (strcmp(line + ml + 1, "1") != 0)
		return -EPROTONOSUPPORT;
	struct identity me = { 0 };
	unsigned seen = 0;
	while ((line = strtok_r(NULL, "\n", &save))) {
		char *eq = strchr(line, '=');
		if (!eq)
			return -EBADMSG;
		*eq = 0;
		const char *v = eq + 1;
		uint64_t u = 0;
		int r = 0, bit;
		if (strcmp(line, "vm") == 0) {
			bit = 1;
			if (strcmp(v, vm) != 0)
				return -EXDEV;
		} else if (strcmp(line, "id") == 0) {
			bit = 2;
			r = parse_id(v, me.id);
		} else if (strcmp(line, "head") == 0) {
			bit = 4;
			r = ferry_parse_u64(v, strlen(v), UINT64_MAX, &me.head);
		} else if (strcmp(line, "epoch") == 0) {
			bit = 8;
			r = ferry_parse_u64(v, strlen(v), UINT64_MAX, &me.epoch);
		} else if (strcmp(line, "wanted") == 0) {
			bit = 16;
			r = ferry_parse_u64(v, strlen(v), 255, &u);
			me.wanted = (uint8_t)u;
		} else
			continue; /* a later minor addition */
		if (r < 0 || (seen & (unsigned)bit))
			return -EBADMSG;
		seen |= (unsigned)bit;
	}
	if (seen != 31)
		return -EBADMSG;
	*ret = me;
	return 0;
}

/* What the tracker's own state says of the chain: the scan tracker's
 * progress file; the qemu tracker keeps none. *ret_fresh: no state. */
static int tracker_head(const struct agent_sync *s, uint64_t *ret, int *ret_fresh)
{
	*ret = 0;
	*ret_fresh = 1;
	if (!s->p->scan)
		return 0;
	int r = agent_scan_head(s->p->scan, ret);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	*ret_fresh = 0;
	return 0;
}

static int identity_load(struct agent_sync *s)
{
	_cleanup_free_ char *text = NULL;
	size_t len;
	int r = ferry_read_file(s->path, (void **)&text, &len);
	if (r >= 0) {
		r = identity_parse(text, len, s->p->vm, &s->me);
		if (r == -EXDEV)
			return log_error_errno(-EINVAL,
					       "%s belongs to another VM than %s: use a state "
					       "directory per VM",
					       s->path, s->p->vm);
		if (r >= 0)
			return 0;
		log_warning_errno(r, "VM %s: %s is unusable; this state takes a new identity",
				  s->p->vm, s->path);
	} else if (r != -ENOENT)
		return log_error_errno(r, "VM %s: cannot read %s", s->p->vm, s->path);

	/* New (or an agent from before identities): the tracker's state says
	 * where its chain stands. */
	struct identity me = { 0 };
	int fresh;
	r = tracker_head(s, &me.head, &fresh);
	if (r < 0)
		return r;
	do {
		if (getentropy(me.id, sizeof(me.id)) < 0)
			return log_error_errno(-errno, "cannot make a state identity");
	} while (!(me.id[0] | me.id[1] | me.id[2] | me.id[3]));
	r = identity_write(s, &me);
	if (r < 0)
		return r;
	s->me = me;
	return 0;
}

int agent_sync_new(const struct agent_sync_params *p, struct agent_sync **ret)
{
	_cleanup_free_ struct agent_sync *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->p = p;
	if (asprintf(&s->path, "%s/identity", p->state_dir) < 0)
		return -ENOMEM;
	int r = identity_load(s);
	if (r < 0) {
		free(s->path);
		return r;
	}
	pthread_mutex_init(&s->lock, NULL);
	*ret = TAKE_PTR(s);
	return 0;
}

struct agent_sync *agent_sync_free(struct agent_sync *s)
{
	if (s) {
		pthread_mutex_destroy(&s->lock);
		free(s->path);
		free(s);
	}
	return NULL;
}

static struct identity me_get(struct agent_sync *s)
{
	pthread_mutex_lock(&s->lock);
	struct identity me = s->me;
	pthread_mutex_unlock(&s->lock);
	return me;
}

/* Written first, then taken: a lease never knows more than the file. */
static int me_set(struct agent_sync *s, const struct identity *me)
{
	int r = identity_write(s, me);
	if (r < 0)
		return r;
	pthread_mutex_lock(&s->lock);
	s->me = *me;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

/* ---- the lease ---- */

static int same_id(const uint8_t *a, const uint8_t *b)
{
	return memcmp(a, b, FERRY_LEASE_ID_SIZE) == 0;
}

static void describe_holder(const struct ferry_lease *l, int64_t now, char *buf, size_t size)
{
	char until[32], id[2 * FERRY_LEASE_ID_SIZE + 1];
	ferry_format_time(l->expires_ns, until, sizeof(until));
	hex_of(l->id, 4, id);
	snprintf(buf, size,
		 "host %s, pid %" PRIu32 ", state %s..., until %s (%" PRId64 " s from now)",
		 l->host, l->pid, id, until, (l->expires_ns - now) / 1000000000);
}

static struct ferry_lease lease_of(const struct agent_sync *s, const struct identity *me,
				   uint64_t seq)
{
	struct ferry_lease l = { .pid = s->p->pid, .seq = seq };
	memcpy(l.id, me->id, sizeof(l.id));
	snprintf(l.host, sizeof(l.host), "%s",
		 s->p->host && s->p->host[0] ? s->p->host : "unknown");
	for (char *c = l.host; *c; c++)
		if (*c < 0x21 || *c > 0x7e)
			*c = '_';
	l.written_ns = ferry_now_ns();
	l.expires_ns = l.written_ns + (int64_t)s->p->lease_s * 1000000000;
	return l;
}

/* A holder other than us whose lease has not run out. */
static int held_by_other(const struct ferry_lease *l, const struct identity *me, int64_t now,
			 const char *vm, const char *how, char *why, size_t why_size)
{
	if (same_id(l->id, me->id) || l->expires_ns <= now)
		return 0;
	char who[512];
	describe_holder(l, now, who, sizeof(who));
	snprintf(why, why_size, "VM %s: another agent %s its lease (%s); not running", vm, how,
		 who);
	return 1;
}

/* Takes the lease. had: the lease read before, if any; exists: a lease
 * blob is there (had may still be NULL: it was damaged). The first take
 * is exclusive; a take-over is read back, and whoever wrote last holds it. */
static int lease_take(struct agent_sync *s, const struct identity *me,
		      const struct ferry_lease *had, int exists, uint64_t seq, char *why,
		      size_t why_size)
{
	struct ferry_cache *c = s->p->cache;
	const char *vm = s->p->vm;
	struct ferry_lease mine = lease_of(s, me, seq), now;
	int r = ferry_control_put_lease(c, vm, &mine, !exists);
	if (r == -EEXIST) {
		/* Somebody made it first: theirs, unless it ran out already. */
		r = ferry_control_get_lease(c, vm, &now);
		if (r >= 0 && held_by_other(&now, me, ferry_now_ns(), vm, "took", why, why_size))
			return -EBUSY;
		if (r >= 0 || r == -EBADMSG || r == -EPROTONOSUPPORT)
			r = ferry_control_put_lease(c, vm, &mine, 0);
	}
	if (r < 0)
		return log_error_errno(r, "VM %s: cannot put its agent lease into %s", vm,
				       ferry_cache_url(c));
	if (had && same_id(had->id, me->id))
		return 0;
	r = ferry_control_get_lease(c, vm, &now);
	if (r < 0)
		return log_error_errno(r, "VM %s: cannot read its agent lease back from %s", vm,
				       ferry_cache_url(c));
	if (!same_id(now.id, me->id)) {
		char who[512];
		describe_holder(&now, ferry_now_ns(), who, sizeof(who));
		snprintf(why, why_size, "VM %s: another agent took its lease at the same time (%s)",
			 vm, who);
		return -EBUSY;
	}
	return 0;
}

int agent_sync_renew(struct agent_sync *s, struct ferry_cache *c)
{
	struct identity me = me_get(s);
	struct ferry_lease now;
	int r = ferry_control_get_lease(c, s->p->vm, &now);
	if (r >= 0 && !same_id(now.id, me.id))
		return -ENOLCK;
	if (r < 0 && r != -ENOENT && r != -EBADMSG)
		return r;
	struct ferry_lease mine = lease_of(s, &me, me.head);
	return ferry_control_put_lease(c, s->p->vm, &mine, 0);
}

/* ---- adopting a resync ---- */

struct fp_source {
	struct ferry_cache *c;
	const char *vm, *disk;
	uint64_t epoch;
};

static int fp_size(void *userdata, uint64_t *ret)
{
	struct fp_source *f = userdata;
	return ferry_control_fp_size(f->c, f->vm, f->epoch, f->disk, ret);
}

static int fp_get_range(void *userdata, uint64_t off, void *buf, size_t len)
{
	struct fp_source *f = userdata;
	return ferry_control_get_fp_range(f->c, f->vm, f->epoch, f->disk, off, buf, len);
}

static const struct ferry_resync_disk *request_disk(const struct ferry_resync_request *q,
						    const char *name)
{
	for (size_t i = 0; i < q->ndisks; i++)
		if (strcmp(q->disks[i].name, name) == 0)
			return &q->disks[i];
	return NULL;
}

/* One disk's fingerprints into the tracker's file: <disk>.fp as it is
 * (scan), or <disk>.qfp made from it (qemu). A disk the vault has never
 * seen has none: the tracker ships it whole. */
static int adopt_disk(struct agent_sync *s, const struct ferry_resync_request *q,
		      const struct ferry_resync_disk *rd)
{
	int qemu = !s->p->scan;
	_cleanup_free_ char *fp = NULL, *qfp = NULL;
	if (asprintf(&fp, "%s/%s.fp%s", s->p->state_dir, rd->name, qemu ? ".resync" : "") < 0 ||
	    asprintf(&qfp, "%s/%s.qfp", s->p->state_dir, rd->name) < 0)
		return -ENOMEM;
	const char *target = qemu ? qfp : fp;
	if (rd->size == 0)
		return unlink(target) < 0 && errno != ENOENT ? -errno : 0;
	struct fp_source f = { s->p->cache, s->p->vm, rd->name, q->epoch };
	struct seed_source src = { fp_size, fp_get_range, &f };
	uint64_t size;
	int r = seed_fetch(&src, fp, &rd->sum, &size);
	if (r >= 0 && size != rd->size)
		r = -EBADMSG;
	if (r < 0 || !qemu)
		return r;
	_cleanup_close_ int fd = open(fp, O_RDONLY | O_CLOEXEC);
	r = fd < 0 ? -errno : fpfile_install(qfp, size, fd, FP_HDR);
	(void)unlink(fp);
	return r;
}

static int adopt(struct agent_sync *s, const struct ferry_resync_request *q)
{
	for (size_t i = 0; i < s->p->ndisks; i++) {
		const struct ferry_resync_disk *rd = request_disk(q, s->p->disks[i].name);
		if (!rd || q->ndisks != s->p->ndisks) {
			log_warning("VM %s: resync %" PRIu64 " names other disks than the agent's",
				    s->p->vm, q->epoch);
			return -EBADMSG;
		}
		int r = adopt_disk(s, q, rd);
		if (r == -EBADMSG || r == -ENOENT) {
			log_warning_errno(r,
					  "VM %s, disk %s: the fingerprints of resync %" PRIu64
					  " are missing or damaged",
					  s->p->vm, rd->name, q->epoch);
			return -EBADMSG;
		}
		if (r < 0)
			return log_error_errno(r,
					       "VM %s, disk %s: cannot take the fingerprints of "
					       "resync %" PRIu64,
					       s->p->vm, rd->name, q->epoch);
	}
	if (s->p->scan) {
		int r = agent_scan_rebase(s->p->scan, q->base_seq + 1, &q->base_digest);
		if (r < 0)
			return r;
	}
	return 0;
}

/* ---- before and after a cycle ---- */

/* What the cache says of the chain: the newest of the acknowledged
 * segment, the waiting ones and a resync's base. */
struct chain {
	struct ferry_ack ack;
	uint64_t top;  /* newest waiting segment; 0: none */
	uint64_t head; /* the newest of all three */
	int have_request;
	struct ferry_resync_request *q;
};

static int chain_read(struct agent_sync *s, struct chain *ch)
{
	struct ferry_cache *c = s->p->cache;
	int r = ferry_control_get_request(c, s->p->vm, ch->q);
	if (r == -EBADMSG || r == -EPROTONOSUPPORT)
		log_warning_errno(r, "VM %s: the resync request in %s is unusable", s->p->vm,
				  ferry_cache_url(c));
	else if (r < 0 && r != -ENOENT)
		return log_error_errno(r, "VM %s: cannot read the resync request in %s", s->p->vm,
				       ferry_cache_url(c));
	ch->have_request = r >= 0;
	r = ferry_cache_get_ack(c, s->p->vm, &ch->ack);
	if (r < 0)
		return log_error_errno(r, "VM %s: cannot read the ack in %s", s->p->vm,
				       ferry_cache_url(c));
	uint64_t *seqs = NULL, bytes;
	size_t n = 0;
	r = ferry_cache_list_segments(c, s->p->vm, &seqs, &n, &bytes);
	if (r < 0)
		return log_error_errno(r, "VM %s: cannot list its segments in %s", s->p->vm,
				       ferry_cache_url(c));
	ch->top = n ? seqs[n - 1] : 0;
	free(seqs);
	ch->head = MAX(MAX(ch->ack.seq, ch->top), ch->have_request ? ch->q->base_seq : 0);
	return 0;
}

/* Whether this state is behind the chain, and why (0: it is not). */
static uint8_t behind(struct agent_sync *s, const struct identity *me, const struct ferry_lease *l,
		      const struct chain *ch, int unusable)
{
	uint64_t head;
	int fresh;
	if (me->wanted)
		return me->wanted;
	if (!me->head && ch->head > 0 && tracker_head(s, &head, &fresh) >= 0 && fresh)
		return FERRY_WANT_STATE_LOST;
	if (l && !same_id(l->id, me->id) && ch->head > me->head)
		return FERRY_WANT_OTHER_AGENT;
	if (l && same_id(l->id, me->id) && l->seq > me->head)
		return FERRY_WANT_STATE_BEHIND;
	if (ch->head < me->head)
		return FERRY_WANT_CHAIN_LOST;
	/* A resync this state took no part in replaced the chain. */
	return unusable ? FERRY_WANT_UNUSABLE : 0;
}

/* Tries the published resync: 1 adopted, 0 unusable, -errno. */
static int try_adopt(struct agent_sync *s, struct identity *me, const struct chain *ch)
{
	const struct ferry_resync_request *q = ch->q;
	/* Taken up already (its chain goes on in the cache): by another
	 * state, or by an older copy of this one. */
	if (ch->ack.seq > q->base_seq || ch->top > q->base_seq)
		return 0;
	int r = adopt(s, q);
	if (r == -EBADMSG)
		return 0;
	if (r < 0)
		return r;
	me->epoch = q->epoch;
	me->head = q->base_seq;
	me->wanted = 0;
	r = me_set(s, me);
	if (r < 0)
		return r;
	log_info("VM %s: adopted resync %" PRIu64 ": the next cycle ships what differs from the "
		 "vault, from segment %" PRIu64,
		 s->p->vm, q->epoch, q->base_seq + 1);
	return 1;
}

static int ask(struct agent_sync *s, struct identity *me, const struct chain *ch, uint8_t reason,
	       char *why, size_t why_size)
{
	if (me->wanted != reason) {
		me->wanted = reason;
		int r = me_set(s, me);
		if (r < 0)
			return r;
	}
	struct ferry_resync_want w = { .written_ns = ferry_now_ns(),
				       .seen_epoch = ch->have_request ? ch->q->epoch : 0,
				       .reason = reason };
	memcpy(w.id, me->id, sizeof(w.id));
	int r = ferry_control_put_want(s->p->cache, s->p->vm, &w);
	if (r < 0)
		return log_error_errno(r, "VM %s: cannot ask for a resync in %s", s->p->vm,
				       ferry_cache_url(s->p->cache));
	snprintf(why, why_size,
		 "VM %s: waiting for a resync from the vault (%s); the cycle ships nothing "
		 "until the replicator publishes it",
		 s->p->vm, ferry_want_reason_text(reason));
	return -ESTALE;
}

int agent_sync_begin(struct agent_sync *s, struct agent_sync_base *ret, char *why, size_t why_size)
{
	struct ferry_cache *c = s->p->cache;
	why[0] = 0;
	struct ferry_lease lease;
	int r = ferry_control_get_lease(c, s->p->vm, &lease);
	if (r == -EBADMSG || r == -EPROTONOSUPPORT)
		log_warning_errno(r, "VM %s: the agent lease in %s is unusable; taking it over",
				  s->p->vm, ferry_cache_url(c));
	else if (r < 0 && r != -ENOENT)
		return log_error_errno(r, "VM %s: cannot read its agent lease in %s", s->p->vm,
				       ferry_cache_url(c));
	const struct ferry_lease *l = r >= 0 ? &lease : NULL;
	int exists = r != -ENOENT;
	struct identity me = me_get(s);
	if (l && held_by_other(l, &me, ferry_now_ns(), s->p->vm, "holds", why, why_size))
		return -EBUSY;

	struct chain ch = { 0 };
	_cleanup_free_ struct ferry_resync_request *q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	ch.q = q;
	r = chain_read(s, &ch);
	if (r < 0)
		return r;
	int adopted = 0, unusable = 0;
	if (ch.have_request && q->epoch > me.epoch) {
		r = try_adopt(s, &me, &ch);
		if (r < 0)
			return r;
		adopted = r;
		unusable = !r;
	}
	uint8_t reason = adopted ? 0 : behind(s, &me, l, &ch, unusable);
	/* Waiting for a resync, the lease keeps the evidence (a head beyond
	 * ours) that made us ask. */
	uint64_t seq = reason && l ? MAX(l->seq, me.head) : me.head;
	r = lease_take(s, &me, l, exists, seq, why, why_size);
	if (r < 0)
		return r;
	if (reason)
		return ask(s, &me, &ch, reason, why, why_size);
	*ret = (struct agent_sync_base){ 0 };
	if (ch.have_request && q->epoch == me.epoch)
		*ret = (struct agent_sync_base){ q->epoch, q->base_seq, q->base_digest };
	return adopted;
}

int agent_sync_end(struct agent_sync *s, uint64_t seq)
{
	struct identity me = me_get(s);
	me.head = MAX(me.head, seq);
	int r = me_set(s, &me);
	if (r < 0)
		return r;
	struct ferry_lease mine = lease_of(s, &me, me.head);
	r = ferry_control_put_lease(s->p->cache, s->p->vm, &mine, 0);
	if (r < 0)
		return log_warning_errno(r, "VM %s: cannot renew its agent lease in %s", s->p->vm,
					 ferry_cache_url(s->p->cache));
	return 0;
}
