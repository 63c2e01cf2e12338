/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Builds catalog snapshots and hands out the newest. A build reads the VMs,
 * their disks, target resources, recovery points and failovers in one pass
 * under the vault lock, renders each VM's vm.conf (ferry/vmdef.h), and
 * indexes points and failovers by id. Recovery points are immutable, so
 * their disk lists are copied from the previous snapshot where it has them.
 * One lock guards the mount's slot for the newest snapshot and every
 * snapshot's reference count.
 */
#include "snapshot.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "array.h"
#include "ferry/changelog.h"

/* The indexes of points and failovers start with their id: index_cmp
 * orders both. */
struct snap_pindex {
	int64_t id;
	struct snap_vm *vm;
	struct snap_point *point;
};

struct snap_findex {
	int64_t id;
	struct snap_vm *vm;
	struct snap_failover *fo;
};
_Static_assert(offsetof(struct snap_pindex, id) == 0 && offsetof(struct snap_findex, id) == 0,
	       "index_cmp reads the id at the start of both");

/* Guards every slot passed to snap_get and every snapshot's refs; taken
 * inside the vault lock, never around it. */
static pthread_mutex_t snap_lock = PTHREAD_MUTEX_INITIALIZER;

static void snap_free(struct snap *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->nvms; i++) {
		struct snap_vm *v = &s->vms[i];

		for (size_t j = 0; j < v->npoints; j++)
			free(v->points[j].disks);
		free(v->points);
		for (size_t j = 0; j < v->nfailovers; j++)
			free(v->failovers[j].disks);
		free(v->failovers);
		for (size_t j = 0; j < v->nres; j++) {
			free((char *)v->res[j].key);
			free((char *)v->res[j].value);
		}
		free(v->res);
		free(v->disks);
		free(v->conf);
	}
	free(s->vms);
	free(s->pidx);
	free(s->fidx);
	free(s);
}

static int vm_cb(const struct ferry_vm *vm, void *userdata)
{
	struct snap *s = userdata;
	struct snap_vm *v;

	if (vm->id <= 0 || vm->id > SNAP_ID_MAX)
		return 0;
	v = grow(&s->vms, &s->nvms, sizeof(*v));
	if (!v)
		return -ENOMEM;
	v->vm = *vm;
	return 0;
}

static int disk_cb(const struct ferry_disk *d, void *userdata)
{
	struct snap_vm *v = userdata;
	struct ferry_disk *n;

	n = grow(&v->disks, &v->ndisks, sizeof(*n));
	if (!n)
		return -ENOMEM;
	*n = *d;
	return 0;
}

static int point_cb(const struct ferry_point *p, void *userdata)
{
	struct snap_vm *v = userdata;
	struct snap_point *n;

	if (p->id <= 0 || p->id > SNAP_ID_MAX)
		return 0;
	n = grow(&v->points, &v->npoints, sizeof(*n));
	if (!n)
		return -ENOMEM;
	n->p = *p;
	return 0;
}

static int point_disk_cb(const struct ferry_point_disk *d, void *userdata)
{
	struct snap_point *p = userdata;
	struct ferry_point_disk *n;

	n = grow(&p->disks, &p->ndisks, sizeof(*n));
	if (!n)
		return -ENOMEM;
	*n = *d;
	return 0;
}

static int failover_cb(const struct ferry_failover *f, void *userdata)
{
	struct snap_vm *v = userdata;
	struct snap_failover *n;

	if (f->id <= 0 || f->id > SNAP_ID_MAX)
		return 0;
	n = grow(&v->failovers, &v->nfailovers, sizeof(*n));
	if (!n)
		return -ENOMEM;
	n->f = *f;
	return 0;
}

static int clone_disk_cb(const struct ferry_clone_disk *d, void *userdata)
{
	struct snap_failover *f = userdata;
	struct ferry_clone_disk *n;

	n = grow(&f->disks, &f->ndisks, sizeof(*n));
	if (!n)
		return -ENOMEM;
	*n = *d;
	return 0;
}

static int resource_cb(const char *kind, const char *value, void *userdata)
{
	struct snap_vm *v = userdata;
	struct ferry_vmdef_resource *n;

	n = grow(&v->res, &v->nres, sizeof(*n));
	if (!n)
		return -ENOMEM;
	n->key = strdup(kind);
	n->value = strdup(value);
	return n->key && n->value ? 0 : -ENOMEM;
}

/* Orders pindex and findex entries alike: both start with their id. */
static int index_cmp(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

static struct snap_pindex *pindex_find(const struct snap *s, int64_t id)
{
	struct snap_pindex key = { .id = id };

	if (!s || s->npidx == 0)
		return NULL;
	return bsearch(&key, s->pidx, s->npidx, sizeof(key), index_cmp);
}

static struct snap_findex *findex_find(const struct snap *s, int64_t id)
{
	struct snap_findex key = { .id = id };

	if (!s || s->nfidx == 0)
		return NULL;
	return bsearch(&key, s->fidx, s->nfidx, sizeof(key), index_cmp);
}

/* vm.conf: read the VM's target resources, then render. */
static int render_conf(struct ferry_catalog *c, struct snap_vm *v)
{
	int r;

	r = ferry_catalog_resource_list(c, v->vm.id, resource_cb, v);
	if (r < 0)
		return r;
	return ferry_vmdef_conf(&v->vm, v->disks, v->ndisks, v->res, v->nres, &v->conf,
				&v->conflen);
}

/* Reads the catalog into a new snapshot. Recovery points are immutable, so
 * their disk lists come from the previous snapshot where it has them. */
static int snap_build(struct ferry_catalog *c, uint64_t gen, const struct snap *old,
		      struct snap **ret)
{
	struct snap *s;
	size_t n = 0, nf = 0;
	int r;

	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->refs = 1;
	s->gen = gen;

	r = ferry_catalog_vm_list(c, vm_cb, s);
	for (size_t i = 0; r >= 0 && i < s->nvms; i++) {
		struct snap_vm *v = &s->vms[i];

		r = ferry_catalog_disk_list(c, v->vm.id, disk_cb, v);
		if (r >= 0)
			r = ferry_catalog_point_list(c, v->vm.id, point_cb, v);
		for (size_t j = 0; r >= 0 && j < v->npoints; j++) {
			struct snap_point *p = &v->points[j];
			const struct snap_pindex *o = pindex_find(old, p->p.id);

			if (o && o->point->ndisks > 0) {
				p->disks = malloc(o->point->ndisks * sizeof(*p->disks));
				if (!p->disks) {
					r = -ENOMEM;
					break;
				}
				memcpy(p->disks, o->point->disks,
				       o->point->ndisks * sizeof(*p->disks));
				p->ndisks = o->point->ndisks;
			} else
				r = ferry_catalog_point_disks(c, p->p.id, point_disk_cb, p);
			if (r < 0)
				break;
			/* Points come oldest first: the last one seen wins. */
			v->latest = p;
			if (p->p.consistency == FERRY_CONSISTENCY_APP)
				v->latest_app = p;
		}
		if (r >= 0)
			r = ferry_catalog_failover_list(c, v->vm.id, failover_cb, v);
		for (size_t j = 0; r >= 0 && j < v->nfailovers; j++)
			r = ferry_catalog_clone_disks(c, v->failovers[j].f.id, clone_disk_cb,
						      &v->failovers[j]);
		if (r >= 0)
			r = render_conf(c, v);
		n += v->npoints;
		nf += v->nfailovers;
	}
	if (r >= 0 && n > 0) {
		s->pidx = calloc(n, sizeof(*s->pidx));
		if (!s->pidx)
			r = -ENOMEM;
		for (size_t i = 0; r >= 0 && i < s->nvms; i++)
			for (size_t j = 0; j < s->vms[i].npoints; j++)
				s->pidx[s->npidx++] = (struct snap_pindex){
					.id = s->vms[i].points[j].p.id,
					.vm = &s->vms[i],
					.point = &s->vms[i].points[j],
				};
		if (r >= 0)
			qsort(s->pidx, s->npidx, sizeof(*s->pidx), index_cmp);
	}
	if (r >= 0 && nf > 0) {
		s->fidx = calloc(nf, sizeof(*s->fidx));
		if (!s->fidx)
			r = -ENOMEM;
		for (size_t i = 0; r >= 0 && i < s->nvms; i++)
			for (size_t j = 0; j < s->vms[i].nfailovers; j++)
				s->fidx[s->nfidx++] = (struct snap_findex){
					.id = s->vms[i].failovers[j].f.id,
					.vm = &s->vms[i],
					.fo = &s->vms[i].failovers[j],
				};
		if (r >= 0)
			qsort(s->fidx, s->nfidx, sizeof(*s->fidx), index_cmp);
	}
	if (r < 0) {
		snap_free(s);
		return r;
	}
	*ret = s;
	return 0;
}

void snap_unref(struct snap *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&snap_lock);
	if (--s->refs == 0)
		snap_free(s);
	pthread_mutex_unlock(&snap_lock);
}

int snap_get(struct ferry_vault *vault, struct snap **current, struct snap **ret)
{
	struct ferry_catalog *c;
	struct snap *s = NULL;
	uint64_t gen = 0;
	int r;

	ferry_vault_lock(vault);
	c = ferry_vault_catalog(vault);
	r = ferry_catalog_generation(c, &gen);
	pthread_mutex_lock(&snap_lock);
	if (*current && (r < 0 || (*current)->gen != gen)) {
		struct snap *fresh = NULL;

		if (r >= 0 && snap_build(c, gen, *current, &fresh) >= 0) {
			if (--(*current)->refs == 0)
				snap_free(*current);
			*current = fresh;
		}
		r = 0;
	} else if (!*current) {
		if (r >= 0)
			r = snap_build(c, gen, NULL, current);
	}
	if (r >= 0 && *current) {
		s = *current;
		s->refs++;
	}
	pthread_mutex_unlock(&snap_lock);
	ferry_vault_unlock(vault);
	if (!s)
		return r < 0 ? r : -EIO;
	*ret = s;
	return 0;
}

void snap_clear(struct snap **current)
{
	pthread_mutex_lock(&snap_lock);
	if (*current && --(*current)->refs == 0)
		snap_free(*current);
	*current = NULL;
	pthread_mutex_unlock(&snap_lock);
}

struct snap_point *snap_point_by_id(const struct snap *s, int64_t id, struct snap_vm **vm)
{
	struct snap_pindex *pi = pindex_find(s, id);

	if (!pi)
		return NULL;
	if (vm)
		*vm = pi->vm;
	return pi->point;
}

struct snap_failover *snap_failover_by_id(const struct snap *s, int64_t id, struct snap_vm **vm)
{
	struct snap_findex *fi = findex_find(s, id);

	if (!fi)
		return NULL;
	if (vm)
		*vm = fi->vm;
	return fi->fo;
}
