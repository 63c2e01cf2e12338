/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Thinning and garbage collection. GC is mark and sweep: the mark walks
 * every map from its root (shared subtrees once), the sweep works pack by
 * pack. The catalog always changes before the store does, so a crash in
 * the middle leaves at worst an unreferenced pack that the next run finds.
 */
#include "maint.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>

#include "ferry/catalog.h"
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
		int64_t age = now_ns - p->time_ns;
		int64_t h = p->time_ns / hour;
		int drop;
		if (age > vm->retention_s * 1000000000LL)
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

static int mark_root(struct mark_ctx *m, const struct ferry_id *root, uint64_t size)
{
	if (ferry_id_is_null(root) || size == 0)
		return 0;
	return ferry_map_walk(ferry_vault_objsrc(m->v), root, DIV_ROUND_UP(size, FERRY_BLOCK_SIZE),
			      mark_node, mark_extent, m);
}

struct root_vec {
	struct ferry_id *roots;
	uint64_t *sizes;
	size_t n;
};

static int push_root(struct root_vec *rv, const struct ferry_id *root, uint64_t size)
{
	struct ferry_id *r = realloc(rv->roots, (rv->n + 1) * sizeof(*r));
	if (!r)
		return -ENOMEM;
	rv->roots = r;
	uint64_t *s = realloc(rv->sizes, (rv->n + 1) * sizeof(*s));
	if (!s)
		return -ENOMEM;
	rv->sizes = s;
	rv->roots[rv->n] = *root;
	rv->sizes[rv->n++] = size;
	return 0;
}

static int root_of_disk(const struct ferry_disk *d, void *userdata)
{
	int r = push_root(userdata, &d->live_root, d->size);
	return r < 0 ? r : push_root(userdata, &d->work_root, d->size);
}

static int root_of_point_disk(const struct ferry_point_disk *d, void *userdata)
{
	return push_root(userdata, &d->root, d->size);
}

struct roots_ctx {
	struct ferry_catalog *c;
	struct root_vec *rv;
	struct idset *live; /* records are marked directly: they reference nothing */
};

static int roots_of_point(const struct ferry_point *p, void *userdata)
{
	struct roots_ctx *rc = userdata;
	int r = idset_add(rc->live, &p->record);
	return r < 0 ? r : ferry_catalog_point_disks(rc->c, p->id, root_of_point_disk, rc->rv);
}

static int roots_of_vm(const struct ferry_vm *vm, void *userdata)
{
	struct roots_ctx *rc = userdata;
	int r = idset_add(rc->live, &vm->record);
	if (r >= 0)
		r = idset_add(rc->live, &vm->state_record);
	if (r >= 0)
		r = ferry_catalog_disk_list(rc->c, vm->id, root_of_disk, rc->rv);
	return r < 0 ? r : ferry_catalog_point_list(rc->c, vm->id, roots_of_point, rc);
}

static int root_of_clone(const struct ferry_clone_disk *d, void *userdata)
{
	int r = push_root(userdata, &d->base_root, d->size);
	return r < 0 ? r : push_root(userdata, &d->root, d->size);
}

/* The vault's own record (settings key vault_record, hex), if it has one. */
static int mark_vault_record(struct ferry_catalog *c, struct idset *live)
{
	char hex[FERRY_ID_HEX_SIZE + 8];
	int r = ferry_catalog_get_setting(c, "vault_record", hex, sizeof(hex));
	if (r == -ENOENT)
		return 0;
	struct ferry_id id;
	if (r >= 0)
		r = ferry_id_from_hex(hex, &id);
	if (r >= 0)
		r = idset_add(live, &id);
	return r < 0 ? r : 0;
}

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

struct rewrite_ctx {
	struct ferry_vault *v;
	struct idset *live;
	uint64_t pack;
	struct ferry_pack_writer *w;
	struct ferry_id *ids;
	struct ferry_loc *locs;
	size_t n;
	int r;
};

static int rewrite_object(const struct ferry_id *id, const struct ferry_loc *loc, void *userdata)
{
	struct rewrite_ctx *rc = userdata;
	if (loc->pack != rc->pack || !idset_has(rc->live, id))
		return 0;
	_cleanup_free_ void *buf = NULL;
	size_t len;
	int r = ferry_vault_read_object(rc->v, id, &buf, &len);
	if (r < 0)
		return r;
	struct ferry_loc nl;
	r = ferry_pack_writer_add(rc->w, (enum ferry_obj_type)loc->type, id, buf, len, &nl);
	if (r < 0)
		return r;
	struct ferry_id *ni = realloc(rc->ids, (rc->n + 1) * sizeof(*ni));
	if (!ni)
		return -ENOMEM;
	rc->ids = ni;
	struct ferry_loc *nloc = realloc(rc->locs, (rc->n + 1) * sizeof(*nloc));
	if (!nloc)
		return -ENOMEM;
	rc->locs = nloc;
	rc->ids[rc->n] = *id;
	rc->locs[rc->n++] = nl;
	return 0;
}

/* Copies the live objects of a pack into a new one, repoints the index,
 * then drops the old pack. */
static int rewrite_pack(struct ferry_vault *v, struct idset *live, const struct pack_stat *p)
{
	struct ferry_catalog *c = ferry_vault_catalog(v);
	struct rewrite_ctx rc = { .v = v, .live = live, .pack = p->pack };
	int r = ferry_store_pack_begin(ferry_vault_store(v), &rc.w);
	if (r >= 0)
		r = ferry_catalog_object_list(c, rewrite_object, &rc);
	if (r >= 0)
		r = ferry_pack_writer_finish(rc.w);
	if (r >= 0)
		r = ferry_catalog_begin(c);
	if (r >= 0) {
		r = ferry_catalog_pack_delete(c, p->pack);
		if (r >= 0)
			r = ferry_catalog_pack_add(c, ferry_pack_writer_id(rc.w),
						   ferry_pack_writer_bytes(rc.w), (uint32_t)rc.n);
		for (size_t i = 0; r >= 0 && i < rc.n; i++)
			r = ferry_catalog_object_put(c, &rc.ids[i], &rc.locs[i]);
		if (r >= 0)
			r = ferry_catalog_commit(c);
		else
			ferry_catalog_rollback(c);
	}
	if (r >= 0)
		r = ferry_store_delete_pack(ferry_vault_store(v), p->pack);
	ferry_pack_writer_free(rc.w);
	free(rc.ids);
	free(rc.locs);
	return r;
}

static int drop_pack(struct ferry_vault *v, uint64_t pack)
{
	struct ferry_catalog *c = ferry_vault_catalog(v);
	int r = ferry_catalog_begin(c);
	if (r < 0)
		return r;
	r = ferry_catalog_pack_delete(c, pack);
	if (r < 0) {
		ferry_catalog_rollback(c);
		return r;
	}
	r = ferry_catalog_commit(c);
	return r < 0 ? r : ferry_store_delete_pack(ferry_vault_store(v), pack);
}

struct orphan_ctx {
	struct ferry_vault *v;
	struct sweep_ctx *s;
	uint64_t *orphans;
	size_t n;
};

/* A pack a writer announced stays for a day: it may be in flight. */
#define INTENT_GRACE_NS (86400LL * 1000000000LL)

static int find_orphan(uint64_t pack, uint64_t size, void *userdata)
{
	struct orphan_ctx *oc = userdata;
	if (find_pack(oc->s, pack))
		return 0;
	int64_t created;
	int r = ferry_catalog_pack_intent_get(ferry_vault_catalog(oc->v), pack, &created);
	if (r < 0 && r != -ENOENT)
		return r;
	if (r >= 0 && ferry_now_ns() - created < INTENT_GRACE_NS)
		return 0;
	uint64_t *n = realloc(oc->orphans, (oc->n + 1) * sizeof(*n));
	if (!n)
		return -ENOMEM;
	oc->orphans = n;
	oc->orphans[oc->n++] = pack;
	return 0;
}

int maint_gc(struct ferry_vault *v, struct gc_result *ret)
{
	struct ferry_catalog *c = ferry_vault_catalog(v);
	struct gc_result res = { 0 };
	struct mark_ctx m = { .v = v };
	struct root_vec rv = { 0 };
	struct roots_ctx rc = { c, &rv, &m.live };
	struct sweep_ctx s = { .m = &m };
	struct orphan_ctx oc = { .v = v, .s = &s };

	int r = mark_vault_record(c, &m.live);
	if (r >= 0)
		r = ferry_catalog_vm_list(c, roots_of_vm, &rc);
	if (r >= 0)
		r = ferry_catalog_clone_disk_all(c, root_of_clone, &rv);
	for (size_t i = 0; r >= 0 && i < rv.n; i++)
		r = mark_root(&m, &rv.roots[i], rv.sizes[i]);
	if (r >= 0)
		r = ferry_catalog_pack_list(c, collect_pack, &s);
	if (r >= 0) {
		qsort(s.packs, s.npacks, sizeof(*s.packs), cmp_pack);
		r = ferry_catalog_object_list(c, count_object, &s);
	}
	/* Orphans are found before the sweep: a pack that a rewrite below
	 * creates is not in s.packs, and must not look like one. */
	if (r >= 0)
		r = ferry_store_list_packs(ferry_vault_store(v), find_orphan, &oc);
	for (size_t i = 0; r >= 0 && i < s.npacks; i++) {
		struct pack_stat *p = &s.packs[i];
		if (p->live == 0) {
			r = drop_pack(v, p->pack);
			res.packs_deleted++;
			res.bytes_freed += p->size;
		} else if (p->dead_bytes > p->live_bytes) {
			r = rewrite_pack(v, &m.live, p);
			res.packs_rewritten++;
			res.bytes_freed += p->dead_bytes;
		}
	}
	for (size_t i = 0; r >= 0 && i < oc.n; i++) {
		r = ferry_store_delete_pack(ferry_vault_store(v), oc.orphans[i]);
		if (r >= 0)
			r = ferry_catalog_pack_intent_delete(c, oc.orphans[i]);
		res.orphan_packs++;
	}
	res.live_objects = m.live.n;
	free(m.live.slots);
	free(rv.roots);
	free(rv.sizes);
	free(s.packs);
	free(oc.orphans);
	if (r >= 0 && ret)
		*ret = res;
	return r;
}
