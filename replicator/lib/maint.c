/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Thinning and garbage collection. GC is mark and sweep: the mark walks
 * every map from its root (shared subtrees once) and lists packs and
 * objects, all in one read transaction; the sweep works pack by pack, each
 * drop or rewrite in a transaction that first checks that the pack is as
 * the snapshot saw it (its ingest generation). Writers beside GC (ferryfs
 * clones) go through the ingest protocol (ingest.h), whose packs GC never
 * takes. The catalog always changes before the store does, so a crash in
 * the middle leaves at worst an unreferenced pack that the next run finds.
 */
#include "maint.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>

#include "ferry/catalog.h"
#include "ferry/ingest.h"
#include "ferry/log.h"
#include "ferry/map.h"
#include "ferry/store.h"
#include "ferry/util.h"

int maint_lock(const char *vault_dir, const char *name, int *ret_fd)
{
	_cleanup_free_ char *path = NULL;
	if (asprintf(&path, "%s/%s.lock", vault_dir, name) < 0)
		return -ENOMEM;
	_cleanup_close_ int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (flock(fd, LOCK_EX | LOCK_NB) < 0)
		return errno == EWOULDBLOCK ? -EBUSY : -errno;
	*ret_fd = TAKE_FD(fd);
	return 0;
}

int maint_writer_lock_wait(const char *vault_dir, unsigned timeout_s, int *ret_fd)
{
	for (unsigned i = 0;; i++) {
		int r = maint_lock(vault_dir, "writer", ret_fd);
		if (r != -EBUSY || i >= timeout_s * 10)
			return r;
		if (i == 0)
			log_info(
				"vault %s is busy (a replicator pass, gc or failover): waiting for it",
				vault_dir);
		struct timespec ts = { 0, 100000000 };
		nanosleep(&ts, NULL);
	}
}

/* ---- thinning ---- */

struct vm_vec {
	struct ferry_vm *vm;
	size_t n;
};

static int collect_vm(const struct ferry_vm *vm, void *userdata)
{
	struct vm_vec *vv = userdata;
	struct ferry_vm *n = realloc(vv->vm, (vv->n + 1) * sizeof(*n));
	if (!n)
		return -ENOMEM;
	vv->vm = n;
	vv->vm[vv->n++] = *vm;
	return 0;
}

int maint_list_vms(struct ferry_vault *v, struct ferry_vm **ret, size_t *ret_n)
{
	struct vm_vec vv = { 0 };
	int r = ferry_catalog_vm_list(ferry_vault_catalog(v), collect_vm, &vv);
	if (r < 0) {
		free(vv.vm);
		return r;
	}
	*ret = vv.vm;
	*ret_n = vv.n;
	return 0;
}

/*
 * The rule, over one series of point times (oldest first), as of now_ns:
 * points older than the retention window go; within it, all of the last
 * two hours stay, older ones keep the newest point of each hour; the
 * newest point of the series always stays. Sets drop[i] for those that go.
 */
static void thin_series(const int64_t *t, size_t n, int64_t now_ns, int64_t retention_ns,
			uint8_t *drop)
{
	const int64_t hour = 3600LL * 1000000000LL;
	if (n == 0)
		return;
	/* Walk newest first so "newest of its hour" is the first one seen of
	 * each hour. */
	int64_t kept_hour = t[n - 1] / hour;
	drop[n - 1] = 0;
	for (size_t i = n - 1; i-- > 0;) {
		int64_t age = ferry_time_since(now_ns, t[i]);
		int64_t h = t[i] / hour;
		if (age > retention_ns)
			drop[i] = 1;
		else if (age <= 2 * hour)
			drop[i] = 0;
		else
			drop[i] = h == kept_hour;
		if (!drop[i])
			kept_hour = h;
	}
}

/* Every point of the vault, as thinning sees it. */
struct thin_point {
	struct ferry_point p;
	size_t vm;      /* index in thin.vms */
	uint8_t newest; /* the VM's newest point: it stays */
	uint8_t group;  /* of a round each member at the time has */
	uint8_t drop;
};

struct thin {
	struct ferry_vm *vms;
	/* Per VM, the key of its group points' series: its resource "group";
	 * a VM with group points but no group is a group of its own. */
	char (*groups)[FERRY_NAME_MAX + 2];
	/* Per VM, since when it is in its group: its creation or its oldest
	 * point, whichever is first (grouppoint.h). */
	int64_t *since;
	size_t nvms;
	struct thin_point *points; /* VM by VM, each oldest first */
	size_t npoints;
	size_t cur_vm; /* while collecting */
};

static void thin_done(struct thin *t)
{
	free(t->vms);
	free(t->groups);
	free(t->since);
	free(t->points);
}

static int collect_point(const struct ferry_point *p, void *userdata)
{
	struct thin *t = userdata;
	struct thin_point *np = realloc(t->points, (t->npoints + 1) * sizeof(*np));
	if (!np)
		return -ENOMEM;
	t->points = np;
	t->points[t->npoints++] = (struct thin_point){ .p = *p, .vm = t->cur_vm };
	return 0;
}

/* Group points by group, then time, then round: a round is a run of
 * equal ones (by_vm 0), a group's series a run of equal keys. */
static int cmp_round(const struct thin *t, size_t a, size_t b, int by_vm)
{
	const struct thin_point *x = &t->points[a], *y = &t->points[b];
	int c = strcmp(t->groups[x->vm], t->groups[y->vm]);
	if (c)
		return c;
	if (x->p.time_ns != y->p.time_ns)
		return x->p.time_ns < y->p.time_ns ? -1 : 1;
	if (x->p.group_round != y->p.group_round || !by_vm)
		return x->p.group_round < y->p.group_round ? -1 :
							     x->p.group_round > y->p.group_round;
	return x->vm < y->vm ? -1 : x->vm > y->vm;
}

static int cmp_group_point(const void *a, const void *b, void *userdata)
{
	return cmp_round(userdata, *(const size_t *)a, *(const size_t *)b, 1);
}

/* Reads every VM, its group and its points. */
static int thin_load(struct ferry_vault *v, struct thin *t)
{
	struct ferry_catalog *c = ferry_vault_catalog(v);
	int r = maint_list_vms(v, &t->vms, &t->nvms);
	if (r < 0)
		return r;
	t->groups = calloc(t->nvms ?: 1, sizeof(*t->groups));
	t->since = calloc(t->nvms ?: 1, sizeof(*t->since));
	if (!t->groups || !t->since)
		return -ENOMEM;
	for (size_t i = 0; i < t->nvms; i++) {
		char g[FERRY_NAME_MAX + 1];
		r = ferry_catalog_resource_get(c, t->vms[i].id, "group", g, sizeof(g));
		if (r == -ENOENT || (r >= 0 && !ferry_name_valid(g)))
			/* '/' is in no name: no group can be called this. */
			snprintf(t->groups[i], sizeof(t->groups[i]), "/%s", t->vms[i].name);
		else if (r >= 0)
			snprintf(t->groups[i], sizeof(t->groups[i]), "%s", g);
		else
			return r;
		t->cur_vm = i;
		size_t before = t->npoints;
		r = ferry_catalog_point_list(c, t->vms[i].id, collect_point, t);
		if (r < 0)
			return r;
		t->since[i] = t->vms[i].created_ns;
		if (t->npoints > before) {
			/* Listed oldest first. */
			t->points[t->npoints - 1].newest = 1;
			t->since[i] = MIN(t->since[i], t->points[before].p.time_ns);
		}
	}
	return 0;
}

/*
 * Group points: the rule over each group's series of rounds of which every
 * member has its point, decided once per round for every member, so that
 * a round is kept or removed on all of them together (a round one member
 * lost would be no group point any more). The series' retention is the
 * longest of its members'; a round that holds some member's newest point
 * stays. A round some member lacks is no group point: its points are
 * ordinary points of their VMs (thin_ordinary). As in grouppoint.h, only
 * the members that were in the group at the round's time count: a VM that
 * joins later must not turn the group's history into ordinary points.
 */
static int thin_rounds(struct thin *t, int64_t now_ns)
{
	size_t n = 0;
	_cleanup_free_ size_t *idx = malloc((t->npoints ?: 1) * sizeof(*idx));
	_cleanup_free_ size_t *start = malloc((t->npoints + 1) * sizeof(*start));
	_cleanup_free_ int64_t *times = malloc((t->npoints ?: 1) * sizeof(*times));
	_cleanup_free_ uint8_t *drop = malloc(t->npoints ?: 1);
	_cleanup_free_ int64_t *since = malloc((t->nvms ?: 1) * sizeof(*since));
	if (!idx || !start || !times || !drop || !since)
		return -ENOMEM;
	for (size_t i = 0; i < t->npoints; i++)
		if (t->points[i].p.group_round)
			idx[n++] = i;
	qsort_r(idx, n, sizeof(*idx), cmp_group_point, t);
	for (size_t a = 0, b; a < n; a = b) {
		const char *key = t->groups[t->points[idx[a]].vm];
		size_t nr = 0, nmembers = 0;
		int64_t retention_ns = 0;
		for (size_t i = 0; i < t->nvms; i++)
			if (strcmp(t->groups[i], key) == 0) {
				retention_ns =
					MAX(retention_ns, ferry_seconds_ns(t->vms[i].retention_s));
				since[nmembers++] = t->since[i];
			}
		/* The complete rounds of the group, a run each. */
		for (b = a; b < n && strcmp(t->groups[t->points[idx[b]].vm], key) == 0;) {
			size_t e = b + 1, vms = 1, members = 0;
			for (; e < n && cmp_round(t, idx[b], idx[e], 0) == 0; e++)
				vms += t->points[idx[e]].vm != t->points[idx[e - 1]].vm;
			/* Each VM with a point of the round is among these. */
			for (size_t i = 0; i < nmembers; i++)
				members += since[i] <= t->points[idx[b]].p.time_ns;
			if (vms == members) {
				start[nr] = b;
				times[nr++] = t->points[idx[b]].p.time_ns;
				for (size_t i = b; i < e; i++)
					t->points[idx[i]].group = 1;
			}
			b = e;
		}
		thin_series(times, nr, now_ns, retention_ns, drop);
		for (size_t k = 0; k < nr; k++) {
			size_t end = start[k] + 1;
			while (end < b && cmp_round(t, idx[start[k]], idx[end], 0) == 0)
				end++;
			int keep = !drop[k];
			for (size_t i = start[k]; i < end; i++)
				keep |= t->points[idx[i]].newest;
			for (size_t i = start[k]; i < end; i++)
				t->points[idx[i]].drop = !keep;
		}
	}
	return 0;
}

/* Every other point (ordinary ones, and those of rounds that are no group
 * point): the rule over each VM's own series. */
static int thin_ordinary(struct thin *t, int64_t now_ns)
{
	_cleanup_free_ int64_t *times = malloc((t->npoints ?: 1) * sizeof(*times));
	_cleanup_free_ uint8_t *drop = malloc(t->npoints ?: 1);
	_cleanup_free_ size_t *idx = malloc((t->npoints ?: 1) * sizeof(*idx));
	if (!times || !drop || !idx)
		return -ENOMEM;
	/* Listed VM by VM, each oldest first. */
	for (size_t a = 0, b; a < t->npoints; a = b) {
		size_t vm = t->points[a].vm, n = 0;
		for (b = a; b < t->npoints && t->points[b].vm == vm; b++)
			if (!t->points[b].group) {
				idx[n] = b;
				times[n++] = t->points[b].p.time_ns;
			}
		thin_series(times, n, now_ns, ferry_seconds_ns(t->vms[vm].retention_s), drop);
		for (size_t k = 0; k < n; k++)
			t->points[idx[k]].drop = drop[k];
	}
	return 0;
}

static int thin_delete(struct ferry_catalog *c, const struct thin *t, unsigned *deleted)
{
	for (size_t i = 0; i < t->npoints; i++) {
		const struct thin_point *tp = &t->points[i];
		if (!tp->drop)
			continue;
		int r = ferry_catalog_point_delete(c, tp->p.id);
		if (r < 0)
			return r;
		char ev[192];
		if (tp->group)
			snprintf(ev, sizeof(ev),
				 "recovery point %s (group %s, round %llu) removed by retention "
				 "policy on every member",
				 tp->p.name, t->groups[tp->vm][0] == '/' ? "-" : t->groups[tp->vm],
				 (unsigned long long)tp->p.group_round);
		else
			snprintf(ev, sizeof(ev), "recovery point %s removed by retention policy",
				 tp->p.name);
		r = ferry_catalog_event_add(c, t->vms[tp->vm].id, "info", ev);
		if (r < 0)
			return r;
		(*deleted)++;
	}
	return 0;
}

int maint_thin(struct ferry_vault *v, int64_t now_ns, unsigned *ret_deleted)
{
	struct ferry_catalog *c = ferry_vault_catalog(v);
	struct thin t = { 0 };
	unsigned deleted = 0;
	/* Read and decided in the transaction that deletes: every member's
	 * points of a round go together. */
	int r = ferry_catalog_begin(c);
	if (r < 0)
		return r;
	r = thin_load(v, &t);
	if (r >= 0)
		r = thin_rounds(&t, now_ns);
	if (r >= 0)
		r = thin_ordinary(&t, now_ns);
	if (r >= 0)
		r = thin_delete(c, &t, &deleted);
	thin_done(&t);
	if (r < 0) {
		ferry_catalog_rollback(c);
		return r;
	}
	r = ferry_catalog_commit(c);
	if (r >= 0)
		*ret_deleted = deleted;
	return r;
}

/* ---- a set of ids for the mark phase ---- */

struct idset {
	struct ferry_id *slots;
	size_t cap, n;
};

static int idset_add(struct idset *s, const struct ferry_id *id); /* 1 = new, 0 = present */

static size_t idset_slot(const struct idset *s, const struct ferry_id *id)
{
	size_t i = (size_t)get_le64(id->b) & (s->cap - 1);
	while (!ferry_id_is_null(&s->slots[i]) && !ferry_id_equal(&s->slots[i], id))
		i = (i + 1) & (s->cap - 1);
	return i;
}

static int idset_grow(struct idset *s)
{
	struct idset n = { .cap = s->cap ? s->cap * 2 : 4096 };
	n.slots = calloc(n.cap, sizeof(*n.slots));
	if (!n.slots)
		return -ENOMEM;
	for (size_t i = 0; i < s->cap; i++)
		if (!ferry_id_is_null(&s->slots[i]))
			idset_add(&n, &s->slots[i]);
	free(s->slots);
	*s = n;
	return 0;
}

static int idset_add(struct idset *s, const struct ferry_id *id)
{
	if (ferry_id_is_null(id))
		return 0;
	if ((s->n + 1) * 2 > s->cap) {
		int r = idset_grow(s);
		if (r < 0)
			return r;
	}
	size_t i = idset_slot(s, id);
	if (!ferry_id_is_null(&s->slots[i]))
		return 0;
	s->slots[i] = *id;
	s->n++;
	return 1;
}

static int idset_has(const struct idset *s, const struct ferry_id *id)
{
	return s->cap && !ferry_id_is_null(&s->slots[idset_slot(s, id)]);
}

/* ---- roots ---- */

struct roots_ctx {
	struct ferry_catalog *c;
	const struct maint_roots_ops *ops;
	void *userdata;
	const struct ferry_vm *vm;
	const char *point;
};

static int record_of(struct roots_ctx *rc, const char *what, const struct ferry_id *id)
{
	return ferry_id_is_null(id) || !rc->ops->record ? 0 :
							  rc->ops->record(what, id, rc->userdata);
}

static int root_of(struct roots_ctx *rc, const char *what, const struct ferry_id *root,
		   uint64_t size)
{
	return ferry_id_is_null(root) || size == 0 ? 0 :
						     rc->ops->root(what, root, size, rc->userdata);
}

static int roots_of_disk(const struct ferry_disk *d, void *userdata)
{
	struct roots_ctx *rc = userdata;
	char what[256];
	snprintf(what, sizeof(what), "VM %s disk %s (live)", rc->vm->name, d->name);
	int r = root_of(rc, what, &d->live_root, d->size);
	if (r < 0 || ferry_id_equal(&d->live_root, &d->work_root))
		return r;
	snprintf(what, sizeof(what), "VM %s disk %s (applied, before marker)", rc->vm->name,
		 d->name);
	return root_of(rc, what, &d->work_root, d->size);
}

static int roots_of_point_disk(const struct ferry_point_disk *d, void *userdata)
{
	struct roots_ctx *rc = userdata;
	char what[256];
	snprintf(what, sizeof(what), "VM %s point %s disk %s", rc->vm->name, rc->point, d->name);
	return root_of(rc, what, &d->root, d->size);
}

static int roots_of_point(const struct ferry_point *p, void *userdata)
{
	struct roots_ctx *rc = userdata;
	char what[256];
	snprintf(what, sizeof(what), "VM %s point %s (record)", rc->vm->name, p->name);
	int r = record_of(rc, what, &p->record);
	rc->point = p->name;
	return r < 0 ? r : ferry_catalog_point_disks(rc->c, p->id, roots_of_point_disk, rc);
}

static int roots_of_clone_disk(const struct ferry_clone_disk *d, void *userdata)
{
	struct roots_ctx *rc = userdata;
	char what[256];
	snprintf(what, sizeof(what), "VM %s failover %s disk %s (clone)", rc->vm->name, rc->point,
		 d->name);
	int r = root_of(rc, what, &d->root, d->size);
	if (r < 0 || ferry_id_equal(&d->root, &d->base_root))
		return r;
	snprintf(what, sizeof(what), "VM %s failover %s disk %s (clone base)", rc->vm->name,
		 rc->point, d->name);
	return root_of(rc, what, &d->base_root, d->size);
}

static int roots_of_failover(const struct ferry_failover *f, void *userdata)
{
	struct roots_ctx *rc = userdata;
	rc->point = f->name;
	return ferry_catalog_clone_disks(rc->c, f->id, roots_of_clone_disk, rc);
}

static int roots_of_vm(const struct ferry_vm *vm, void *userdata)
{
	struct roots_ctx *rc = userdata;
	char what[256];
	rc->vm = vm;
	snprintf(what, sizeof(what), "VM %s (record)", vm->name);
	int r = record_of(rc, what, &vm->record);
	snprintf(what, sizeof(what), "VM %s (state record)", vm->name);
	if (r >= 0)
		r = record_of(rc, what, &vm->state_record);
	if (r >= 0)
		r = ferry_catalog_disk_list(rc->c, vm->id, roots_of_disk, rc);
	if (r >= 0)
		r = ferry_catalog_point_list(rc->c, vm->id, roots_of_point, rc);
	if (r >= 0)
		r = ferry_catalog_failover_list(rc->c, vm->id, roots_of_failover, rc);
	return r;
}

int maint_roots(struct ferry_vault *v, const struct maint_roots_ops *ops, void *userdata)
{
	struct ferry_catalog *c = ferry_vault_catalog(v);
	struct roots_ctx rc = { .c = c, .ops = ops, .userdata = userdata };
	char hex[FERRY_ID_HEX_SIZE + 8];
	int r = ferry_catalog_get_setting(c, "vault_record", hex, sizeof(hex));
	if (r >= 0) {
		struct ferry_id id;
		r = ferry_id_from_hex(hex, &id);
		if (r >= 0)
			r = record_of(&rc, "the vault (record)", &id);
	} else if (r == -ENOENT) {
		r = 0;
	}
	return r < 0 ? r : ferry_catalog_vm_list(c, roots_of_vm, &rc);
}

/* ---- mark ---- */

struct mark_ctx {
	struct ferry_vault *v;
	struct idset live;
};

static int mark_node(const struct ferry_id *id, void *userdata)
{
	struct mark_ctx *m = userdata;
	int r = idset_add(&m->live, id);
	return r < 0 ? r : r == 0 ? 1 : 0; /* seen before: skip the subtree */
}

static int mark_extent(const struct ferry_extent *e, void *userdata)
{
	struct mark_ctx *m = userdata;
	int r = idset_add(&m->live, &e->chunk);
	return r < 0 ? r : 0;
}

static int mark_root(const char *what, const struct ferry_id *root, uint64_t size, void *userdata)
{
	struct mark_ctx *m = userdata;
	return ferry_map_walk(ferry_vault_objsrc(m->v), root, DIV_ROUND_UP(size, FERRY_BLOCK_SIZE),
			      mark_node, mark_extent, m);
}

static int mark_record(const char *what, const struct ferry_id *id, void *userdata)
{
	struct mark_ctx *m = userdata;
	int r = idset_add(&m->live, id); /* records reference nothing */
	return r < 0 ? r : 0;
}

static const struct maint_roots_ops mark_ops = { mark_root, mark_record };

/* ---- sweep ---- */

struct pack_stat {
	uint64_t pack;
	uint64_t size;
	uint64_t live_bytes, dead_bytes;
	uint32_t live, dead;
};

struct sweep_ctx {
	struct mark_ctx *m;
	struct pack_stat *packs;
	size_t npacks;
	uint64_t gen; /* the ingest generation of the snapshot */
};

static int collect_pack(uint64_t pack, uint64_t size, uint32_t count, void *userdata)
{
	struct sweep_ctx *s = userdata;
	struct pack_stat *n = realloc(s->packs, (s->npacks + 1) * sizeof(*n));
	if (!n)
		return -ENOMEM;
	s->packs = n;
	s->packs[s->npacks++] = (struct pack_stat){ .pack = pack, .size = size };
	return 0;
}

static struct pack_stat *find_pack(struct sweep_ctx *s, uint64_t pack)
{
	size_t lo = 0, hi = s->npacks;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (s->packs[mid].pack == pack)
			return &s->packs[mid];
		if (s->packs[mid].pack < pack)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

static int cmp_pack(const void *a, const void *b)
{
	uint64_t x = ((const struct pack_stat *)a)->pack, y = ((const struct pack_stat *)b)->pack;
	return x < y ? -1 : x > y;
}

static int count_object(const struct ferry_id *id, const struct ferry_loc *loc, void *userdata)
{
	struct sweep_ctx *s = userdata;
	struct pack_stat *p = find_pack(s, loc->pack);
	if (!p)
		return 0; /* an index row without its pack: check reports it */
	if (idset_has(&s->m->live, id)) {
		p->live++;
		p->live_bytes += loc->clen;
	} else {
		p->dead++;
		p->dead_bytes += loc->clen;
	}
	return 0;
}

/* Inside the transaction that drops a pack: the pack must be as the
 * snapshot saw it. A pack stamped since (an ingest reused one of its
 * objects) is left for the next run: -EAGAIN. */
static int check_unchanged(struct ferry_catalog *c, const struct sweep_ctx *s, uint64_t pack)
{
	uint64_t gen;
	int r = ferry_catalog_pack_gen(c, pack, &gen);
	if (r == -ENOENT)
		return -EAGAIN; /* gone already */
	if (r < 0)
		return r;
	return gen > s->gen ? -EAGAIN : 0;
}

struct drop_ctx {
	const struct sweep_ctx *s;
	uint64_t pack;
};

static int drop_rows(struct ferry_catalog *c, void *userdata)
{
	struct drop_ctx *d = userdata;
	int r = check_unchanged(c, d->s, d->pack);
	return r < 0 ? r : ferry_catalog_pack_delete(c, d->pack);
}

static int drop_pack(struct ferry_vault *v, const struct sweep_ctx *s, uint64_t pack)
{
	struct ferry_catalog *c = ferry_vault_catalog(v);
	struct drop_ctx d = { s, pack };
	int r = ferry_catalog_begin(c);
	if (r < 0)
		return r;
	r = drop_rows(c, &d);
	if (r < 0) {
		ferry_catalog_rollback(c);
		return r;
	}
	r = ferry_catalog_commit(c);
	return r < 0 ? r : ferry_store_delete_pack(ferry_vault_store(v), pack);
}

struct rewrite_ctx {
	struct ferry_vault *v;
	struct idset *live;
	uint64_t pack;
	struct ferry_ingest *in;
};

static int rewrite_object(const struct ferry_id *id, const struct ferry_loc *loc, void *userdata)
{
	struct rewrite_ctx *rc = userdata;
	if (loc->pack != rc->pack || !idset_has(rc->live, id))
		return 0;
	_cleanup_free_ void *buf = NULL;
	size_t len;
	int r = ferry_vault_read_object(rc->v, id, &buf, &len);
	return r < 0 ? r :
		       ferry_ingest_add_object(rc->in, (enum ferry_obj_type)loc->type, id, buf,
					       len);
}

/* Copies the live objects of a pack into a new one through an ingest whose
 * commit repoints the index and drops the old pack's rows; then the old
 * file goes. */
static int rewrite_pack(struct ferry_vault *v, const struct sweep_ctx *s, const struct pack_stat *p)
{
	struct rewrite_ctx rc = { .v = v, .live = &s->m->live, .pack = p->pack };
	struct drop_ctx d = { s, p->pack };
	int r = ferry_ingest_new(v, &rc.in);
	if (r >= 0)
		ferry_ingest_no_vault_dedup(rc.in); /* the copies must land in the new pack */
	/* The objects to copy are those of the snapshot; reading them needs
	 * no snapshot, as only GC removes objects. */
	if (r >= 0)
		r = ferry_catalog_object_list_pack(ferry_vault_catalog(v), p->pack, rewrite_object,
						   &rc);
	if (r >= 0)
		r = ferry_ingest_commit(rc.in, drop_rows, &d);
	ferry_ingest_free(rc.in);
	return r < 0 ? r : ferry_store_delete_pack(ferry_vault_store(v), p->pack);
}

struct orphan_ctx {
	struct ferry_vault *v;
	struct sweep_ctx *s;
	uint64_t *orphans;
	size_t n;
};

/* A pack a writer announced stays for a day, as it may be in flight,
 * unless its writer was a process of this machine that is gone. */
#define INTENT_GRACE_NS (86400LL * 1000000000LL)

static int find_orphan(uint64_t pack, uint64_t size, void *userdata)
{
	struct orphan_ctx *oc = userdata;
	if (find_pack(oc->s, pack))
		return 0;
	/* Not in the snapshot: ask the catalog as it is now, in one read, so
	 * a writer that recorded the pack and retracted its intent since is
	 * seen on one side of that. */
	int64_t created = 0;
	char owner[FERRY_INGEST_OWNER_MAX];
	int r = ferry_catalog_pack_claim(ferry_vault_catalog(oc->v), pack, &created, owner,
					 sizeof(owner));
	if (r < 0)
		return r;
	if (r == 1 || (r == 2 && ferry_now_ns() - created < INTENT_GRACE_NS &&
		       !ferry_ingest_owner_gone(owner)))
		return 0;
	uint64_t *n = realloc(oc->orphans, (oc->n + 1) * sizeof(*n));
	if (!n)
		return -ENOMEM;
	oc->orphans = n;
	oc->orphans[oc->n++] = pack;
	return 0;
}

/* Mark and list in one read transaction: one consistent view of roots,
 * packs and objects, and the generation it corresponds to. */
static int snapshot(struct ferry_vault *v, struct mark_ctx *m, struct sweep_ctx *s)
{
	struct ferry_catalog *c = ferry_vault_catalog(v);
	int r = ferry_catalog_begin_read(c);
	if (r < 0)
		return r;
	r = ferry_catalog_gen_current(c, &s->gen);
	if (r >= 0)
		r = maint_roots(v, &mark_ops, m);
	if (r >= 0)
		r = ferry_catalog_pack_list(c, collect_pack, s);
	if (r >= 0) {
		qsort(s->packs, s->npacks, sizeof(*s->packs), cmp_pack);
		r = ferry_catalog_object_list(c, count_object, s);
	}
	ferry_catalog_rollback(c);
	return r;
}

int maint_gc(struct ferry_vault *v, struct gc_result *ret)
{
	struct gc_result res = { 0 };
	struct mark_ctx m = { .v = v };
	struct sweep_ctx s = { .m = &m };
	struct orphan_ctx oc = { .v = v, .s = &s };

	int r = snapshot(v, &m, &s);
	if (r >= 0 && gc_after_snapshot_hook)
		r = gc_after_snapshot_hook(v);
	/* Orphans are found before the sweep: a pack that a rewrite below
	 * creates is not in s.packs, and must not look like one. */
	if (r >= 0)
		r = ferry_store_list_packs(ferry_vault_store(v), find_orphan, &oc);
	for (size_t i = 0; r >= 0 && i < s.npacks; i++) {
		struct pack_stat *p = &s.packs[i];
		if (p->live == 0) {
			r = drop_pack(v, &s, p->pack);
			if (r >= 0) {
				res.packs_deleted++;
				res.bytes_freed += p->size;
			}
		} else if (p->dead_bytes > p->live_bytes) {
			r = rewrite_pack(v, &s, p);
			if (r >= 0) {
				res.packs_rewritten++;
				res.bytes_freed += p->dead_bytes;
			}
		}
		if (r == -EAGAIN) {
			res.packs_skipped++;
			r = 0;
		}
	}
	for (size_t i = 0; r >= 0 && i < oc.n; i++) {
		r = ferry_store_delete_pack(ferry_vault_store(v), oc.orphans[i]);
		if (r >= 0)
			r = ferry_catalog_pack_intent_delete(ferry_vault_catalog(v), oc.orphans[i]);
		res.orphan_packs++;
	}
	res.live_objects = m.live.n;
	free(m.live.slots);
	free(s.packs);
	free(oc.orphans);
	if (r >= 0 && ret)
		*ret = res;
	return r;
}

int (*gc_after_snapshot_hook)(struct ferry_vault *v);
