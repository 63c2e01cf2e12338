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

struct point_vec {
	struct ferry_point *p;
	size_t n;
};

static int collect_point(const struct ferry_point *p, void *userdata)
{
	struct point_vec *pv = userdata;
	struct ferry_point *np = realloc(pv->p, (pv->n + 1) * sizeof(*np));
	if (!np)
		return -ENOMEM;
	pv->p = np;
	pv->p[pv->n++] = *p;
	return 0;
}

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

static int thin_vm(struct ferry_catalog *c, const struct ferry_vm *vm, int64_t now_ns,
		   unsigned *deleted)
{
	const int64_t hour = 3600LL * 1000000000LL;
	/* Point times can come from a store's records (ferry attach), which
	 * are checked but not trusted to be sane. */
	const int64_t retention_ns = ferry_seconds_ns(vm->retention_s);
	struct point_vec pv = { 0 };
	int r = ferry_catalog_point_list(c, vm->id, collect_point, &pv);
	if (r < 0 || pv.n < 2) {
		free(pv.p);
		return r;
	}
	/* Oldest first; walk newest first so "newest of its hour" is the
	 * first one seen of each hour. */
	int64_t kept_hour = pv.p[pv.n - 1].time_ns / hour;
	for (size_t i = pv.n - 1; i-- > 0;) {
		const struct ferry_point *p = &pv.p[i];
		int64_t age = ferry_time_since(now_ns, p->time_ns);
		int64_t h = p->time_ns / hour;
		int drop;
		if (age > retention_ns)
			drop = 1;
		else if (age <= 2 * hour)
			drop = 0;
		else
			drop = h == kept_hour;
		if (!drop) {
			kept_hour = h;
			continue;
		}
		r = ferry_catalog_point_delete(c, p->id);
		if (r < 0)
			break;
		char ev[128];
		snprintf(ev, sizeof(ev), "recovery point %s removed by retention policy", p->name);
		r = ferry_catalog_event_add(c, vm->id, "info", ev);
		if (r < 0)
			break;
		(*deleted)++;
	}
	free(pv.p);
	return r;
}

int maint_thin(struct ferry_vault *v, int64_t now_ns, unsigned *ret_deleted)
{
	struct ferry_catalog *c = ferry_vault_catalog(v);
	struct ferry_vm *vms = NULL;
	size_t n = 0;
	unsigned deleted = 0;
	int r = maint_list_vms(v, &vms, &n);
	if (r >= 0)
		r = ferry_catalog_begin(c);
	for (size_t i = 0; r >= 0 && i < n; i++)
		r = thin_vm(c, &vms[i], now_ns, &deleted);
	free(vms);
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
