/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * ferryfs: mounts a vault read-only with the FUSE low-level API. Each VM is
 * a directory with its definition (vm.conf), its live disk images, its
 * recovery points (immutable images the kernel may cache across opens) and
 * its failovers. The view follows the replicator without a remount: every
 * lookup, getattr, opendir and open checks the catalog's generation and
 * rebuilds an in-memory snapshot of VMs, disks and points when it moved.
 * Inode numbers are computed from catalog ids, so the daemon keeps no
 * per-inode state and forget has nothing to do; per-open state (an image, a
 * rendered text file or a directory listing) lives in fi->fh.
 */
#define FUSE_USE_VERSION 314

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "ferry/catalog.h"
#include "ferry/changelog.h"
#include "ferry/image.h"
#include "ferry/log.h"
#include "ferry/util.h"
#include "ferry/vault.h"

/*
 * Inode numbers: 8 bits of kind, 40 bits of catalog id, 16 bits of disk
 * index:
 *
 *	ino = kind << 56 | id << 16 | idx
 *
 * The id is the VM's catalog id for per-VM nodes and the recovery point's
 * catalog id (unique across VMs) for per-point nodes; idx is the disk's
 * source index for images and 0 otherwise. The root is FUSE_ROOT_ID (kind
 * 0). Catalog ids are row ids that are not handed out again while the
 * catalog lives, so an inode names one object for good and needs no table;
 * objects with ids beyond 40 bits are not shown.
 */
enum kind {
	K_ROOT = 0,
	K_VM = 1,         /* <vm>/ */
	K_VMCONF = 2,     /* <vm>/vm.conf */
	K_DISKS = 3,      /* <vm>/disks/ */
	K_LIVE = 4,       /* <vm>/disks/<disk>.img */
	K_POINTS = 5,     /* <vm>/recovery-points/ */
	K_LATEST = 6,     /* <vm>/recovery-points/latest */
	K_LATEST_APP = 7, /* <vm>/recovery-points/latest-app-consistent */
	K_FAILOVERS = 8,  /* <vm>/failovers/ */
	K_POINT = 9,      /* <vm>/recovery-points/<point>/ (id: the point's) */
	K_PIMAGE = 10,    /* <vm>/recovery-points/<point>/<disk>.img */
	K_PINFO = 11,     /* <vm>/recovery-points/<point>/info */
};

#define ID_BITS 40
#define ID_MAX ((INT64_C(1) << ID_BITS) - 1)

/* Changing things are revalidated often; recovery points never change. */
#define TIMEOUT_LIVE 1.0
#define TIMEOUT_IMMUTABLE 3600.0

#ifndef FERRY_VERSION
#define FERRY_VERSION "0.1.0"
#endif

#define CACHE_MIB_DEFAULT 256
#define THREADS_DEFAULT 16

static fuse_ino_t make_ino(enum kind k, int64_t id, uint16_t idx)
{
	if (k == K_ROOT)
		return FUSE_ROOT_ID;
	return (fuse_ino_t)k << 56 | (fuse_ino_t)id << 16 | idx;
}

/* ---- a snapshot of the catalog ---- */

struct prec {
	struct ferry_point p;
	struct ferry_point_disk *disks;
	size_t ndisks;
};

struct vrec {
	struct ferry_vm vm;
	struct ferry_disk *disks;
	size_t ndisks;
	struct prec *points; /* oldest first */
	size_t npoints;
	struct prec *latest, *latest_app;
	char *conf; /* the text of vm.conf */
	size_t conflen;
};

struct pindex {
	int64_t id;
	struct vrec *vm;
	struct prec *point;
};

struct snap {
	unsigned refs;
	uint64_t gen;
	struct vrec *vms; /* name order */
	size_t nvms;
	struct pindex *pidx; /* sorted by point id, to resolve inodes */
	size_t npidx;
};

/* Guards fs->snap and every snapshot's refs; taken inside the vault lock,
 * never around it. */
static pthread_mutex_t snap_lock = PTHREAD_MUTEX_INITIALIZER;

struct fs {
	struct ferry_vault *vault;
	struct ferry_chunk_cache *cache;
	struct snap *snap; /* the newest view; holds one reference */
	uid_t uid;
	gid_t gid;
	int64_t mounted_ns;
};

/* Appends one zeroed element to a growable array; NULL when out of memory. */
static void *grow(void *pp, size_t *n, size_t size)
{
	void **p = pp;
	void *q;

	q = realloc(*p, (*n + 1) * size);
	if (!q)
		return NULL;
	*p = q;
	q = (uint8_t *)q + *n * size;
	memset(q, 0, size);
	(*n)++;
	return q;
}

static void snap_free(struct snap *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->nvms; i++) {
		struct vrec *v = &s->vms[i];

		for (size_t j = 0; j < v->npoints; j++)
			free(v->points[j].disks);
		free(v->points);
		free(v->disks);
		free(v->conf);
	}
	free(s->vms);
	free(s->pidx);
	free(s);
}

static const char *state_name(enum ferry_vm_state s)
{
	switch (s) {
	case FERRY_VM_INITIAL:
		return "initial";
	case FERRY_VM_PROTECTED:
		return "protected";
	case FERRY_VM_ERROR:
		return "error";
	}
	return "unknown";
}

static const char *consistency_name(int c)
{
	return c == FERRY_CONSISTENCY_APP ? "app" : "crash";
}

static void format_time(int64_t ns, char *buf, size_t size)
{
	time_t t = (time_t)(ns / 1000000000);
	struct tm tm;

	if (ns < 0 || !gmtime_r(&t, &tm) || strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, size, "unknown");
}

static int vm_cb(const struct ferry_vm *vm, void *userdata)
{
	struct snap *s = userdata;
	struct vrec *v;

	if (vm->id <= 0 || vm->id > ID_MAX)
		return 0;
	v = grow(&s->vms, &s->nvms, sizeof(*v));
	if (!v)
		return -ENOMEM;
	v->vm = *vm;
	return 0;
}

static int disk_cb(const struct ferry_disk *d, void *userdata)
{
	struct vrec *v = userdata;
	struct ferry_disk *n;

	n = grow(&v->disks, &v->ndisks, sizeof(*n));
	if (!n)
		return -ENOMEM;
	*n = *d;
	return 0;
}

static int point_cb(const struct ferry_point *p, void *userdata)
{
	struct vrec *v = userdata;
	struct prec *n;

	if (p->id <= 0 || p->id > ID_MAX)
		return 0;
	n = grow(&v->points, &v->npoints, sizeof(*n));
	if (!n)
		return -ENOMEM;
	n->p = *p;
	return 0;
}

static int point_disk_cb(const struct ferry_point_disk *d, void *userdata)
{
	struct prec *p = userdata;
	struct ferry_point_disk *n;

	n = grow(&p->disks, &p->ndisks, sizeof(*n));
	if (!n)
		return -ENOMEM;
	*n = *d;
	return 0;
}

static int resource_cb(const char *kind, const char *value, void *userdata)
{
	FILE *f = userdata;

	fprintf(f, "%s = %s\n", kind, value);
	return 0;
}

static int pindex_cmp(const void *a, const void *b)
{
	const struct pindex *x = a, *y = b;

	return x->id < y->id ? -1 : x->id > y->id;
}

static struct pindex *pindex_find(const struct snap *s, int64_t id)
{
	struct pindex key = { .id = id };

	if (!s || s->npidx == 0)
		return NULL;
	return bsearch(&key, s->pidx, s->npidx, sizeof(key), pindex_cmp);
}

/* vm.conf: the VM's settings and target resources as `key = value` lines. */
static int render_conf(struct ferry_catalog *c, struct vrec *v)
{
	char *buf = NULL, when[64];
	size_t len = 0;
	FILE *f;
	int r;

	f = open_memstream(&buf, &len);
	if (!f)
		return -ENOMEM;
	fprintf(f, "# ferry: definition and target settings of VM %s (read-only)\n", v->vm.name);
	fprintf(f, "name = %s\n", v->vm.name);
	fprintf(f, "state = %s\n", state_name(v->vm.state));
	if (v->vm.error[0])
		fprintf(f, "error = %s\n", v->vm.error);
	fprintf(f, "cache-url = %s\n", v->vm.cache_url);
	fprintf(f, "crash-interval = %" PRId64 "\n", v->vm.crash_interval_s);
	fprintf(f, "app-interval = %" PRId64 "\n", v->vm.app_interval_s);
	fprintf(f, "retention = %" PRId64 "\n", v->vm.retention_s);
	format_time(v->vm.created_ns, when, sizeof(when));
	fprintf(f, "created = %s\n", when);
	fprintf(f, "applied-seq = %" PRIu64 "\n", v->vm.applied_seq);
	if (v->vm.marker_ns > 0) {
		format_time(v->vm.marker_ns, when, sizeof(when));
		fprintf(f, "live-time = %s\n", when);
	}
	for (size_t i = 0; i < v->ndisks; i++) {
		const struct ferry_disk *d = &v->disks[i];

		fprintf(f, "disk.%u.name = %s\n", d->idx, d->name);
		fprintf(f, "disk.%u.size = %" PRIu64 "\n", d->idx, d->size);
		fprintf(f, "disk.%u.source = %s\n", d->idx, d->source_path);
	}
	r = ferry_catalog_resource_list(c, v->vm.id, resource_cb, f);
	if (fclose(f) != 0 && r >= 0)
		r = -ENOMEM;
	if (r < 0) {
		free(buf);
		return r;
	}
	v->conf = buf;
	v->conflen = len;
	return 0;
}

/* Reads the catalog into a new snapshot. Recovery points are immutable, so
 * their disk lists come from the previous snapshot where it has them. */
static int snap_build(struct ferry_catalog *c, uint64_t gen, const struct snap *old,
		      struct snap **ret)
{
	struct snap *s;
	size_t n = 0;
	int r;

	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->refs = 1;
	s->gen = gen;

	r = ferry_catalog_vm_list(c, vm_cb, s);
	for (size_t i = 0; r >= 0 && i < s->nvms; i++) {
		struct vrec *v = &s->vms[i];

		r = ferry_catalog_disk_list(c, v->vm.id, disk_cb, v);
		if (r >= 0)
			r = ferry_catalog_point_list(c, v->vm.id, point_cb, v);
		for (size_t j = 0; r >= 0 && j < v->npoints; j++) {
			struct prec *p = &v->points[j];
			const struct pindex *o = pindex_find(old, p->p.id);

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
			r = render_conf(c, v);
		n += v->npoints;
	}
	if (r >= 0 && n > 0) {
		s->pidx = calloc(n, sizeof(*s->pidx));
		if (!s->pidx)
			r = -ENOMEM;
		for (size_t i = 0; r >= 0 && i < s->nvms; i++)
			for (size_t j = 0; j < s->vms[i].npoints; j++)
				s->pidx[s->npidx++] = (struct pindex){
					.id = s->vms[i].points[j].p.id,
					.vm = &s->vms[i],
					.point = &s->vms[i].points[j],
				};
		if (r >= 0)
			qsort(s->pidx, s->npidx, sizeof(*s->pidx), pindex_cmp);
	}
	if (r < 0) {
		snap_free(s);
		return r;
	}
	*ret = s;
	return 0;
}

static void snap_unref(struct snap *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&snap_lock);
	if (--s->refs == 0)
		snap_free(s);
	pthread_mutex_unlock(&snap_lock);
}

static void snap_unrefp(struct snap **s)
{
	snap_unref(*s);
}
#define _cleanup_snap_ _cleanup_(snap_unrefp)

/* The current view, refreshed if a writer committed since it was taken. A
 * catalog that cannot be read right now (a writer's checkpoint, a busy
 * database) leaves the previous view in place rather than failing. */
static int snap_get(struct fs *fs, struct snap **ret)
{
	struct ferry_catalog *c;
	struct snap *s = NULL;
	uint64_t gen = 0;
	int r;

	ferry_vault_lock(fs->vault);
	c = ferry_vault_catalog(fs->vault);
	r = ferry_catalog_generation(c, &gen);
	pthread_mutex_lock(&snap_lock);
	if (fs->snap && (r < 0 || fs->snap->gen != gen)) {
		struct snap *fresh = NULL;

		if (r >= 0 && snap_build(c, gen, fs->snap, &fresh) >= 0) {
			if (--fs->snap->refs == 0)
				snap_free(fs->snap);
			fs->snap = fresh;
		}
		r = 0;
	} else if (!fs->snap) {
		if (r >= 0)
			r = snap_build(c, gen, NULL, &fs->snap);
	}
	if (r >= 0 && fs->snap) {
		s = fs->snap;
		s->refs++;
	}
	pthread_mutex_unlock(&snap_lock);
	ferry_vault_unlock(fs->vault);
	if (!s)
		return r < 0 ? r : -EIO;
	*ret = s;
	return 0;
}

/* ---- nodes: what an inode stands for in a snapshot ---- */

struct node {
	enum kind kind;
	struct vrec *vm;
	struct prec *point;
	const struct ferry_disk *disk;        /* K_LIVE */
	const struct ferry_point_disk *pdisk; /* K_PIMAGE */
};

static struct vrec *vm_by_id(struct snap *s, int64_t id)
{
	for (size_t i = 0; i < s->nvms; i++)
		if (s->vms[i].vm.id == id)
			return &s->vms[i];
	return NULL;
}

static struct vrec *vm_by_name(struct snap *s, const char *name)
{
	for (size_t i = 0; i < s->nvms; i++)
		if (strcmp(s->vms[i].vm.name, name) == 0)
			return &s->vms[i];
	return NULL;
}

static const struct ferry_disk *disk_by_idx(const struct vrec *v, unsigned idx)
{
	for (size_t i = 0; i < v->ndisks; i++)
		if (v->disks[i].idx == idx)
			return &v->disks[i];
	return NULL;
}

static const struct ferry_point_disk *pdisk_by_idx(const struct prec *p, unsigned idx)
{
	for (size_t i = 0; i < p->ndisks; i++)
		if (p->disks[i].idx == idx)
			return &p->disks[i];
	return NULL;
}

static int resolve(struct snap *s, fuse_ino_t ino, struct node *n)
{
	enum kind k = (enum kind)(ino >> 56);
	int64_t id = (int64_t)((ino >> 16) & ID_MAX);
	unsigned idx = ino & 0xffff;
	struct pindex *pi;

	*n = (struct node){ .kind = k };
	if (ino == FUSE_ROOT_ID)
		return 0;
	switch (k) {
	case K_VM:
	case K_VMCONF:
	case K_DISKS:
	case K_POINTS:
	case K_FAILOVERS:
		n->vm = vm_by_id(s, id);
		return n->vm && idx == 0 ? 0 : -ENOENT;
	case K_LIVE:
		n->vm = vm_by_id(s, id);
		if (!n->vm)
			return -ENOENT;
		n->disk = disk_by_idx(n->vm, idx);
		return n->disk ? 0 : -ENOENT;
	case K_LATEST:
		n->vm = vm_by_id(s, id);
		return n->vm && n->vm->latest ? 0 : -ENOENT;
	case K_LATEST_APP:
		n->vm = vm_by_id(s, id);
		return n->vm && n->vm->latest_app ? 0 : -ENOENT;
	case K_POINT:
	case K_PINFO:
	case K_PIMAGE:
		pi = pindex_find(s, id);
		if (!pi)
			return -ENOENT;
		n->vm = pi->vm;
		n->point = pi->point;
		if (k != K_PIMAGE)
			return idx == 0 ? 0 : -ENOENT;
		n->pdisk = pdisk_by_idx(n->point, idx);
		return n->pdisk ? 0 : -ENOENT;
	case K_ROOT:
		break;
	}
	return -ENOENT;
}

static fuse_ino_t node_ino(const struct node *n)
{
	switch (n->kind) {
	case K_ROOT:
		return FUSE_ROOT_ID;
	case K_VM:
	case K_VMCONF:
	case K_DISKS:
	case K_POINTS:
	case K_LATEST:
	case K_LATEST_APP:
	case K_FAILOVERS:
		return make_ino(n->kind, n->vm->vm.id, 0);
	case K_LIVE:
		return make_ino(n->kind, n->vm->vm.id, n->disk->idx);
	case K_POINT:
	case K_PINFO:
		return make_ino(n->kind, n->point->p.id, 0);
	case K_PIMAGE:
		return make_ino(n->kind, n->point->p.id, n->pdisk->idx);
	}
	return 0;
}

static fuse_ino_t parent_ino(const struct node *n)
{
	struct node p = *n;

	switch (n->kind) {
	case K_ROOT:
	case K_VM:
		return FUSE_ROOT_ID;
	case K_VMCONF:
	case K_DISKS:
	case K_POINTS:
	case K_FAILOVERS:
		p.kind = K_VM;
		break;
	case K_LIVE:
		p.kind = K_DISKS;
		break;
	case K_LATEST:
	case K_LATEST_APP:
	case K_POINT:
		p.kind = K_POINTS;
		break;
	case K_PIMAGE:
	case K_PINFO:
		p.kind = K_POINT;
		break;
	}
	return node_ino(&p);
}

/* info: what a recovery point is, as `key = value` lines. */
static int render_info(const struct prec *p, char **ret, size_t *ret_len)
{
	char *buf = NULL, when[64];
	size_t len = 0;
	FILE *f;

	f = open_memstream(&buf, &len);
	if (!f)
		return -ENOMEM;
	format_time(p->p.time_ns, when, sizeof(when));
	fprintf(f, "name = %s\n", p->p.name);
	fprintf(f, "time = %s\n", when);
	fprintf(f, "time-ns = %" PRId64 "\n", p->p.time_ns);
	fprintf(f, "consistency = %s\n", consistency_name(p->p.consistency));
	fprintf(f, "seq = %" PRIu64 "\n", p->p.seq);
	for (size_t i = 0; i < p->ndisks; i++) {
		fprintf(f, "disk.%u.name = %s\n", p->disks[i].idx, p->disks[i].name);
		fprintf(f, "disk.%u.size = %" PRIu64 "\n", p->disks[i].idx, p->disks[i].size);
	}
	if (fclose(f) != 0) {
		free(buf);
		return -ENOMEM;
	}
	*ret = buf;
	*ret_len = len;
	return 0;
}

static struct timespec ns_to_ts(int64_t ns)
{
	if (ns < 0)
		ns = 0;
	return (struct timespec){ .tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000 };
}

static int node_stat(struct fs *fs, const struct node *n, struct stat *st, double *timeout)
{
	int64_t when = fs->mounted_ns;
	int r;

	*st = (struct stat){
		.st_ino = node_ino(n),
		.st_uid = fs->uid,
		.st_gid = fs->gid,
		.st_blksize = FERRY_BLOCK_SIZE,
	};
	*timeout = TIMEOUT_LIVE;
	switch (n->kind) {
	case K_ROOT:
		st->st_mode = S_IFDIR | 0555;
		st->st_nlink = 2;
		break;
	case K_VM:
	case K_DISKS:
	case K_POINTS:
	case K_FAILOVERS:
		st->st_mode = S_IFDIR | 0555;
		st->st_nlink = 2;
		when = n->vm->vm.created_ns;
		break;
	case K_VMCONF:
		st->st_mode = S_IFREG | 0444;
		st->st_nlink = 1;
		st->st_size = (off_t)n->vm->conflen;
		when = n->vm->vm.created_ns;
		break;
	case K_LIVE:
		st->st_mode = S_IFREG | 0444;
		st->st_nlink = 1;
		st->st_size = (off_t)n->disk->size;
		/* The live view's time: a new marker changes it, which also
		 * tells the kernel to drop cached pages (auto_inval_data). */
		when = n->vm->vm.marker_ns > 0 ? n->vm->vm.marker_ns : n->vm->vm.created_ns;
		break;
	case K_LATEST:
	case K_LATEST_APP:
		st->st_mode = S_IFLNK | 0777;
		st->st_nlink = 1;
		st->st_size = (off_t)strlen(n->kind == K_LATEST ? n->vm->latest->p.name :
								  n->vm->latest_app->p.name);
		when = (n->kind == K_LATEST ? n->vm->latest : n->vm->latest_app)->p.time_ns;
		break;
	case K_POINT:
		st->st_mode = S_IFDIR | 0555;
		st->st_nlink = 2;
		when = n->point->p.time_ns;
		break;
	case K_PIMAGE:
		st->st_mode = S_IFREG | 0444;
		st->st_nlink = 1;
		st->st_size = (off_t)n->pdisk->size;
		when = n->point->p.time_ns;
		*timeout = TIMEOUT_IMMUTABLE;
		break;
	case K_PINFO: {
		_cleanup_free_ char *text = NULL;
		size_t len;

		r = render_info(n->point, &text, &len);
		if (r < 0)
			return r;
		st->st_mode = S_IFREG | 0444;
		st->st_nlink = 1;
		st->st_size = (off_t)len;
		when = n->point->p.time_ns;
		*timeout = TIMEOUT_IMMUTABLE;
		break;
	}
	}
	st->st_blocks = (st->st_size + 511) / 512;
	/* How much of an image is allocated is not known without walking its
	 * whole map. Claiming one block less than full makes cp, tar and rsync
	 * take the file for sparse and ask SEEK_DATA/SEEK_HOLE, which is exact. */
	if ((n->kind == K_LIVE || n->kind == K_PIMAGE) && st->st_blocks > 0)
		st->st_blocks--;
	st->st_mtim = st->st_ctim = st->st_atim = ns_to_ts(when);
	return 0;
}

static int strip_img(const char *name, char *out, size_t size)
{
	size_t l = strlen(name);

	if (l <= 4 || strcmp(name + l - 4, ".img") != 0 || l - 4 >= size)
		return -ENOENT;
	memcpy(out, name, l - 4);
	out[l - 4] = 0;
	return 0;
}

static int child(struct snap *s, const struct node *parent, const char *name, struct node *n)
{
	char base[FERRY_NAME_MAX + 1];

	*n = (struct node){ .vm = parent->vm, .point = parent->point };
	switch (parent->kind) {
	case K_ROOT:
		n->kind = K_VM;
		n->vm = vm_by_name(s, name);
		return n->vm ? 0 : -ENOENT;
	case K_VM:
		if (strcmp(name, "vm.conf") == 0)
			n->kind = K_VMCONF;
		else if (strcmp(name, "disks") == 0)
			n->kind = K_DISKS;
		else if (strcmp(name, "recovery-points") == 0)
			n->kind = K_POINTS;
		else if (strcmp(name, "failovers") == 0)
			n->kind = K_FAILOVERS;
		else
			return -ENOENT;
		return 0;
	case K_DISKS:
		if (strip_img(name, base, sizeof(base)) < 0)
			return -ENOENT;
		n->kind = K_LIVE;
		for (size_t i = 0; i < parent->vm->ndisks; i++)
			if (strcmp(parent->vm->disks[i].name, base) == 0) {
				n->disk = &parent->vm->disks[i];
				return 0;
			}
		return -ENOENT;
	case K_POINTS:
		if (strcmp(name, "latest") == 0) {
			n->kind = K_LATEST;
			return parent->vm->latest ? 0 : -ENOENT;
		}
		if (strcmp(name, "latest-app-consistent") == 0) {
			n->kind = K_LATEST_APP;
			return parent->vm->latest_app ? 0 : -ENOENT;
		}
		n->kind = K_POINT;
		for (size_t i = 0; i < parent->vm->npoints; i++)
			if (strcmp(parent->vm->points[i].p.name, name) == 0) {
				n->point = &parent->vm->points[i];
				return 0;
			}
		return -ENOENT;
	case K_POINT:
		if (strcmp(name, "info") == 0) {
			n->kind = K_PINFO;
			return 0;
		}
		if (strip_img(name, base, sizeof(base)) < 0)
			return -ENOENT;
		n->kind = K_PIMAGE;
		for (size_t i = 0; i < parent->point->ndisks; i++)
			if (strcmp(parent->point->disks[i].name, base) == 0) {
				n->pdisk = &parent->point->disks[i];
				return 0;
			}
		return -ENOENT;
	case K_FAILOVERS:
		return -ENOENT;
	default:
		return -ENOTDIR;
	}
}

/* ---- per-open state ---- */

struct handle {
	struct ferry_image *img; /* images */
	char *text;              /* vm.conf, info */
	size_t len;
};

static void handle_free(struct handle *h)
{
	if (!h)
		return;
	ferry_image_free(h->img);
	free(h->text);
	free(h);
}

struct dirbuf {
	char *buf;
	size_t len;
};

static int dirbuf_add(fuse_req_t req, struct dirbuf *d, const char *name, fuse_ino_t ino,
		      mode_t mode)
{
	struct stat st = { .st_ino = ino, .st_mode = mode };
	size_t need = fuse_add_direntry(req, NULL, 0, name, NULL, 0);
	char *p;

	p = realloc(d->buf, d->len + need);
	if (!p)
		return -ENOMEM;
	d->buf = p;
	fuse_add_direntry(req, d->buf + d->len, need, name, &st, (off_t)(d->len + need));
	d->len += need;
	return 0;
}

static int list_dir(fuse_req_t req, const struct node *n, struct dirbuf *d)
{
	char name[FERRY_NAME_MAX + 8];
	struct node c = *n;
	int r;

	r = dirbuf_add(req, d, ".", node_ino(n), S_IFDIR);
	if (r >= 0)
		r = dirbuf_add(req, d, "..", parent_ino(n), S_IFDIR);
	if (r < 0)
		return r;

	switch (n->kind) {
	case K_ROOT:
		/* the VMs come from the snapshot the caller holds */
		return 0;
	case K_VM: {
		static const struct {
			const char *name;
			enum kind kind;
			mode_t mode;
		} entries[] = {
			{ "vm.conf", K_VMCONF, S_IFREG },
			{ "disks", K_DISKS, S_IFDIR },
			{ "recovery-points", K_POINTS, S_IFDIR },
			{ "failovers", K_FAILOVERS, S_IFDIR },
		};
		for (size_t i = 0; r >= 0 && i < ARRAY_SIZE(entries); i++) {
			c.kind = entries[i].kind;
			r = dirbuf_add(req, d, entries[i].name, node_ino(&c), entries[i].mode);
		}
		return r;
	}
	case K_DISKS:
		c.kind = K_LIVE;
		for (size_t i = 0; r >= 0 && i < n->vm->ndisks; i++) {
			c.disk = &n->vm->disks[i];
			snprintf(name, sizeof(name), "%s.img", c.disk->name);
			r = dirbuf_add(req, d, name, node_ino(&c), S_IFREG);
		}
		return r;
	case K_POINTS:
		c.kind = K_POINT;
		for (size_t i = 0; r >= 0 && i < n->vm->npoints; i++) {
			c.point = &n->vm->points[i];
			r = dirbuf_add(req, d, c.point->p.name, node_ino(&c), S_IFDIR);
		}
		if (r >= 0 && n->vm->latest) {
			c.kind = K_LATEST;
			r = dirbuf_add(req, d, "latest", node_ino(&c), S_IFLNK);
		}
		if (r >= 0 && n->vm->latest_app) {
			c.kind = K_LATEST_APP;
			r = dirbuf_add(req, d, "latest-app-consistent", node_ino(&c), S_IFLNK);
		}
		return r;
	case K_POINT:
		c.kind = K_PIMAGE;
		for (size_t i = 0; r >= 0 && i < n->point->ndisks; i++) {
			c.pdisk = &n->point->disks[i];
			snprintf(name, sizeof(name), "%s.img", c.pdisk->name);
			r = dirbuf_add(req, d, name, node_ino(&c), S_IFREG);
		}
		if (r >= 0) {
			c.kind = K_PINFO;
			r = dirbuf_add(req, d, "info", node_ino(&c), S_IFREG);
		}
		return r;
	case K_FAILOVERS:
		return 0;
	default:
		return -ENOTDIR;
	}
}

/* ---- FUSE operations: each replies exactly once ---- */

static struct fs *req_fs(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	/* Data changes under the live images: let an mtime change drop
	 * cached pages. Recovery-point images never change. */
	if (conn->capable & FUSE_CAP_AUTO_INVAL_DATA)
		conn->want |= FUSE_CAP_AUTO_INVAL_DATA;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = req_fs(req);
	_cleanup_snap_ struct snap *s = NULL;
	struct fuse_entry_param e = {};
	struct node p, n;
	double timeout;
	int r;

	r = snap_get(fs, &s);
	if (r >= 0)
		r = resolve(s, parent, &p);
	if (r >= 0)
		r = child(s, &p, name, &n);
	if (r >= 0)
		r = node_stat(fs, &n, &e.attr, &timeout);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	e.ino = e.attr.st_ino;
	e.attr_timeout = e.entry_timeout = timeout;
	fuse_reply_entry(req, &e);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	/* Inodes are computed from catalog ids: nothing to count down. */
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = req_fs(req);
	_cleanup_snap_ struct snap *s = NULL;
	struct stat st;
	struct node n;
	double timeout;
	int r;

	r = snap_get(fs, &s);
	if (r >= 0)
		r = resolve(s, ino, &n);
	if (r >= 0)
		r = node_stat(fs, &n, &st, &timeout);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	fuse_reply_attr(req, &st, timeout);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct fs *fs = req_fs(req);
	_cleanup_snap_ struct snap *s = NULL;
	struct node n;
	int r;

	r = snap_get(fs, &s);
	if (r >= 0)
		r = resolve(s, ino, &n);
	if (r >= 0 && n.kind != K_LATEST && n.kind != K_LATEST_APP)
		r = -EINVAL;
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	fuse_reply_readlink(req, (n.kind == K_LATEST ? n.vm->latest : n.vm->latest_app)->p.name);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = req_fs(req);
	_cleanup_snap_ struct snap *s = NULL;
	struct dirbuf *d;
	struct node n;
	int r;

	r = snap_get(fs, &s);
	if (r >= 0)
		r = resolve(s, ino, &n);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	d = calloc(1, sizeof(*d));
	if (!d) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	/* The whole listing is taken at opendir, so one readdir pass sees one
	 * consistent view even while the replicator commits. */
	r = list_dir(req, &n, d);
	if (r >= 0 && n.kind == K_ROOT) {
		struct node c = { .kind = K_VM };

		for (size_t i = 0; r >= 0 && i < s->nvms; i++) {
			c.vm = &s->vms[i];
			r = dirbuf_add(req, d, c.vm->vm.name, node_ino(&c), S_IFDIR);
		}
	}
	if (r < 0) {
		free(d->buf);
		free(d);
		fuse_reply_err(req, -r);
		return;
	}
	fi->fh = (uint64_t)(uintptr_t)d;
	fi->cache_readdir = 0;
	if (fuse_reply_open(req, fi) == -ENOENT) {
		/* the opener went away (interrupted): no releasedir follows */
		free(d->buf);
		free(d);
	}
}

/*
 * Replies with a copy of bytes that belong to an fh. Once the reply is
 * written the reader may close the file at once, and the release that
 * follows can run on another thread before fuse_reply_buf() has returned:
 * nothing after the write may touch memory the release frees (sanitizers
 * do look at the iovec again after writev).
 */
static void reply_copy(fuse_req_t req, const void *p, size_t n)
{
	_cleanup_free_ void *copy = NULL;

	if (n == 0) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	copy = malloc(n);
	if (!copy) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	memcpy(copy, p, n);
	fuse_reply_buf(req, copy, n);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	struct dirbuf *d = (struct dirbuf *)(uintptr_t)fi->fh;

	if (off < 0 || (size_t)off >= d->len)
		fuse_reply_buf(req, NULL, 0);
	else
		reply_copy(req, d->buf + off, MIN(d->len - (size_t)off, size));
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct dirbuf *d = (struct dirbuf *)(uintptr_t)fi->fh;

	free(d->buf);
	free(d);
	fuse_reply_err(req, 0);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = req_fs(req);
	_cleanup_snap_ struct snap *s = NULL;
	struct handle *h;
	struct node n;
	int r;

	if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
		fuse_reply_err(req, EROFS);
		return;
	}
	r = snap_get(fs, &s);
	if (r >= 0)
		r = resolve(s, ino, &n);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	h = calloc(1, sizeof(*h));
	if (!h) {
		fuse_reply_err(req, ENOMEM);
		return;
	}

	/* O_DIRECT is accepted as it is (qemu's cache=none uses it); reads
	 * are served the same way either way. */
	fi->direct_io = 0;
	fi->keep_cache = 0;
	switch (n.kind) {
	case K_LIVE:
		/* The live map moves on: resolve it now, never keep pages. */
		r = ferry_image_open(fs->cache, &n.disk->live_root, n.disk->size, &h->img);
		if (r < 0)
			log_error_errno(r, "VM %s disk %s: cannot open live image", n.vm->vm.name,
					n.disk->name);
		break;
	case K_PIMAGE:
		r = ferry_image_open(fs->cache, &n.pdisk->root, n.pdisk->size, &h->img);
		if (r < 0)
			log_error_errno(r, "VM %s point %s disk %s: cannot open image",
					n.vm->vm.name, n.point->p.name, n.pdisk->name);
		fi->keep_cache = 1;
		break;
	case K_PINFO:
		r = render_info(n.point, &h->text, &h->len);
		fi->keep_cache = 1;
		break;
	case K_VMCONF:
		h->text = malloc(n.vm->conflen + 1);
		if (!h->text) {
			r = -ENOMEM;
			break;
		}
		memcpy(h->text, n.vm->conf, n.vm->conflen);
		h->len = n.vm->conflen;
		break;
	case K_LATEST:
	case K_LATEST_APP:
		r = -ELOOP;
		break;
	default:
		r = -EISDIR;
		break;
	}
	if (r < 0) {
		handle_free(h);
		fuse_reply_err(req, r == -EBADMSG ? EIO : -r);
		return;
	}
	fi->fh = (uint64_t)(uintptr_t)h;
	if (fuse_reply_open(req, fi) == -ENOENT)
		handle_free(h);
}

/* One read buffer per worker thread, kept across requests: sequential
 * readers ask for up to 1 MiB at a time, and a fresh allocation of that size
 * is an mmap and page faults every time. */
static pthread_key_t readbuf_key;
struct readbuf {
	void *p;
	size_t size;
};

static void readbuf_free(void *p)
{
	struct readbuf *b = p;

	free(b->p);
	free(b);
}

static void *readbuf_get(size_t size)
{
	struct readbuf *b = pthread_getspecific(readbuf_key);

	if (!b) {
		b = calloc(1, sizeof(*b));
		if (!b)
			return NULL;
		if (pthread_setspecific(readbuf_key, b) != 0) {
			free(b);
			return NULL;
		}
	}
	if (b->size < size) {
		void *p = malloc(size);

		if (!p)
			return NULL;
		free(b->p);
		b->p = p;
		b->size = size;
	}
	return b->p;
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	ssize_t n;
	void *buf;

	if (off < 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (h->text) {
		if ((size_t)off >= h->len)
			fuse_reply_buf(req, NULL, 0);
		else
			reply_copy(req, h->text + off, MIN(h->len - (size_t)off, size));
		return;
	}
	buf = readbuf_get(size);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	n = ferry_image_read(h->img, buf, size, (uint64_t)off);
	if (n < 0) {
		log_error_errno((int)n, "read of inode %" PRIx64 " at %" PRIu64 " failed",
				(uint64_t)ino, (uint64_t)off);
		/* A damaged vault is a medium error to the reader. */
		fuse_reply_err(req, n == -EBADMSG ? EIO : (int)-n);
		return;
	}
	fuse_reply_buf(req, buf, (size_t)n);
}

static void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
		     struct fuse_file_info *fi)
{
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	uint64_t pos;
	int r;

	if (whence != SEEK_DATA && whence != SEEK_HOLE) {
		/* the kernel handles SEEK_SET/CUR/END itself */
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (off < 0) {
		fuse_reply_err(req, ENXIO);
		return;
	}
	if (h->text) {
		if ((size_t)off >= h->len)
			r = -ENXIO;
		else {
			pos = whence == SEEK_DATA ? (uint64_t)off : h->len;
			r = 0;
		}
	} else
		r = ferry_image_seek(h->img, (uint64_t)off, whence, &pos);
	if (r < 0) {
		fuse_reply_err(req, r == -EBADMSG ? EIO : -r);
		return;
	}
	fuse_reply_lseek(req, (off_t)pos);
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	fuse_reply_err(req, 0);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	handle_free((struct handle *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs st = {
		.f_bsize = FERRY_BLOCK_SIZE,
		.f_frsize = FERRY_BLOCK_SIZE,
		.f_namemax = 255,
		.f_flag = ST_RDONLY,
	};

	fuse_reply_statfs(req, &st);
}

static void op_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
	fuse_reply_err(req, (mask & W_OK) ? EROFS : 0);
}

/* Everything that would change the vault: the view is read-only. */
static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	fuse_reply_err(req, EROFS);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	fuse_reply_err(req, EROFS);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	fuse_reply_err(req, EROFS);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	fuse_reply_err(req, EROFS);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	fuse_reply_err(req, EROFS);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		      const char *newname, unsigned int flags)
{
	fuse_reply_err(req, EROFS);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	fuse_reply_err(req, EROFS);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	fuse_reply_err(req, EROFS);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	fuse_reply_err(req, EROFS);
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
			size_t size, int flags)
{
	fuse_reply_err(req, EROFS);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	fuse_reply_err(req, EROFS);
}

static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
			 struct fuse_file_info *fi)
{
	fuse_reply_err(req, EROFS);
}

static void op_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in,
			       struct fuse_file_info *fi_in, fuse_ino_t ino_out, off_t off_out,
			       struct fuse_file_info *fi_out, size_t len, int flags)
{
	fuse_reply_err(req, EROFS);
}

static const struct fuse_lowlevel_ops ops = {
	.init = op_init,
	.lookup = op_lookup,
	.forget = op_forget,
	.forget_multi = op_forget_multi,
	.getattr = op_getattr,
	.setattr = op_setattr,
	.readlink = op_readlink,
	.mknod = op_mknod,
	.mkdir = op_mkdir,
	.unlink = op_unlink,
	.rmdir = op_unlink,
	.symlink = op_symlink,
	.rename = op_rename,
	.link = op_link,
	.open = op_open,
	.read = op_read,
	.write = op_write,
	.flush = op_flush,
	.release = op_release,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.releasedir = op_releasedir,
	.statfs = op_statfs,
	.setxattr = op_setxattr,
	.removexattr = op_removexattr,
	.access = op_access,
	.create = op_create,
	.fallocate = op_fallocate,
	.copy_file_range = op_copy_file_range,
	.lseek = op_lseek,
};

/* ---- the program ---- */

static void help(void)
{
	printf("Usage: ferryfs --vault DIR MOUNTPOINT [OPTIONS]\n"
	       "\n"
	       "Mounts the vault DIR read-only at MOUNTPOINT: its VMs, live disk images,\n"
	       "recovery points and failovers. Unmount with `fusermount3 -u MOUNTPOINT`.\n"
	       "\n"
	       "Options:\n"
	       "  --vault DIR          the vault to show (required)\n"
	       "  -f, --foreground     stay in the foreground\n"
	       "  -d, --debug          log every FUSE request (implies -f)\n"
	       "  -o OPT[,OPT...]      mount options: allow_other, default_permissions,\n"
	       "                       cache_size=MIB, threads=N, and the FUSE ones\n"
	       "  --cache-size MIB     decompressed chunk cache (default %d MiB)\n"
	       "  --threads N          most worker threads (default %d)\n"
	       "  -h, --help           show this help\n"
	       "  --version            show the version\n",
	       CACHE_MIB_DEFAULT, THREADS_DEFAULT);
}

static int parse_uint(const char *s, unsigned long max, unsigned long *ret)
{
	unsigned long v;
	char *end;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || v > max)
		return -EINVAL;
	*ret = v;
	return 0;
}

struct options {
	const char *vault;
	const char *mountpoint;
	int foreground;
	int debug;
	unsigned long cache_mib;
	unsigned long threads;
	char *fuse_opts; /* what remains of -o for libfuse */
};

/* Takes our own keys out of an -o list and keeps the rest for libfuse. */
static int take_mount_options(struct options *o, const char *list)
{
	_cleanup_free_ char *copy = strdup(list);
	char *saveptr = NULL;

	if (!copy)
		return -ENOMEM;
	for (char *opt = strtok_r(copy, ",", &saveptr); opt; opt = strtok_r(NULL, ",", &saveptr)) {
		size_t l;
		char *p;

		if (strncmp(opt, "cache_size=", 11) == 0) {
			if (parse_uint(opt + 11, 1024 * 1024, &o->cache_mib) < 0)
				return log_error_errno(-EINVAL, "invalid cache_size: %s", opt + 11);
			continue;
		}
		if (strncmp(opt, "threads=", 8) == 0) {
			if (parse_uint(opt + 8, 1024, &o->threads) < 0 || o->threads == 0)
				return log_error_errno(-EINVAL, "invalid threads: %s", opt + 8);
			continue;
		}
		if (strcmp(opt, "ro") == 0 || strcmp(opt, "rw") == 0)
			continue; /* read-only either way */
		l = o->fuse_opts ? strlen(o->fuse_opts) : 0;
		p = realloc(o->fuse_opts, l + strlen(opt) + 2);
		if (!p)
			return -ENOMEM;
		if (l)
			p[l++] = ',';
		strcpy(p + l, opt);
		o->fuse_opts = p;
	}
	return 0;
}

static int parse_argv(int argc, char *argv[], struct options *o)
{
	enum {
		ARG_VAULT = 0x100,
		ARG_CACHE,
		ARG_THREADS,
		ARG_VERSION
	};
	static const struct option longopts[] = {
		{ "vault", required_argument, NULL, ARG_VAULT },
		{ "cache-size", required_argument, NULL, ARG_CACHE },
		{ "threads", required_argument, NULL, ARG_THREADS },
		{ "foreground", no_argument, NULL, 'f' },
		{ "debug", no_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, ARG_VERSION },
		{}
	};
	int c, r;

	while ((c = getopt_long(argc, argv, "fdo:h", longopts, NULL)) >= 0) {
		switch (c) {
		case ARG_VAULT:
			o->vault = optarg;
			break;
		case ARG_CACHE:
			if (parse_uint(optarg, 1024 * 1024, &o->cache_mib) < 0)
				return log_error_errno(-EINVAL, "invalid --cache-size: %s", optarg);
			break;
		case ARG_THREADS:
			if (parse_uint(optarg, 1024, &o->threads) < 0 || o->threads == 0)
				return log_error_errno(-EINVAL, "invalid --threads: %s", optarg);
			break;
		case 'f':
			o->foreground = 1;
			break;
		case 'd':
			o->debug = 1;
			o->foreground = 1;
			break;
		case 'o':
			r = take_mount_options(o, optarg);
			if (r < 0)
				return r;
			break;
		case 'h':
			help();
			return 0;
		case ARG_VERSION:
			printf("ferryfs %s\n", FERRY_VERSION);
			printf("FUSE library version %s\n", fuse_pkgversion());
			return 0;
		default:
			return -EINVAL;
		}
	}
	if (optind < argc)
		o->mountpoint = argv[optind++];
	if (optind < argc) {
		log_error("unexpected argument: %s", argv[optind]);
		return -EINVAL;
	}
	if (!o->vault) {
		log_error("missing --vault DIR (see --help)");
		return -EINVAL;
	}
	if (!o->mountpoint) {
		log_error("missing MOUNTPOINT (see --help)");
		return -EINVAL;
	}
	return 1;
}

/* A FUSE session and how far it got, undone in reverse order. */
struct session {
	struct fuse_session *se;
	int signals;
	int mounted;
};

static void session_done(struct session *s)
{
	if (!s->se)
		return;
	if (s->mounted)
		fuse_session_unmount(s->se);
	if (s->signals)
		fuse_remove_signal_handlers(s->se);
	fuse_session_destroy(s->se);
}

static void fs_done(struct fs *fs)
{
	pthread_mutex_lock(&snap_lock);
	if (fs->snap && --fs->snap->refs == 0)
		snap_free(fs->snap);
	fs->snap = NULL;
	pthread_mutex_unlock(&snap_lock);
	ferry_chunk_cache_free(fs->cache);
	ferry_vault_free(fs->vault);
}

static int serve(struct fs *fs, const struct options *o, const char *mnt)
{
	_cleanup_(fuse_opt_free_args) struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	_cleanup_(session_done) struct session s = {};
	struct fuse_loop_config *cfg;
	int r;

	if (fuse_opt_add_arg(&args, "ferryfs") < 0 || fuse_opt_add_arg(&args, "-o") < 0 ||
	    fuse_opt_add_arg(&args, "fsname=ferry,subtype=ferryfs") < 0 ||
	    (o->fuse_opts &&
	     (fuse_opt_add_arg(&args, "-o") < 0 || fuse_opt_add_arg(&args, o->fuse_opts) < 0)) ||
	    (o->debug && fuse_opt_add_arg(&args, "-d") < 0))
		return log_error_errno(-ENOMEM, "out of memory");

	s.se = fuse_session_new(&args, &ops, sizeof(ops), fs);
	if (!s.se)
		return log_error_errno(-EINVAL, "cannot start a FUSE session (bad -o option?)");
	if (fuse_set_signal_handlers(s.se) < 0)
		return log_error_errno(-EIO, "cannot install signal handlers");
	s.signals = 1;
	if (fuse_session_mount(s.se, mnt) < 0)
		return log_error_errno(-EIO, "cannot mount on %s", o->mountpoint);
	s.mounted = 1;
	if (fuse_daemonize(o->foreground) < 0)
		return log_error_errno(-EIO, "cannot detach");

	cfg = fuse_loop_cfg_create();
	if (!cfg)
		return log_error_errno(-ENOMEM, "out of memory");
	fuse_loop_cfg_set_max_threads(cfg, (unsigned)o->threads);
	fuse_loop_cfg_set_idle_threads(cfg, (unsigned)MIN(o->threads, 10ul));
	r = fuse_session_loop_mt(s.se, cfg);
	fuse_loop_cfg_destroy(cfg);
	if (r != 0)
		return log_error_errno(r < 0 ? r : -EIO, "FUSE session ended with an error");
	return 0;
}

static int run(const struct options *o)
{
	_cleanup_free_ char *vault_dir = NULL, *mnt = NULL;
	_cleanup_(fs_done) struct fs fs = {
		.uid = getuid(),
		.gid = getgid(),
		.mounted_ns = ferry_now_ns(),
	};
	struct snap *s = NULL;
	struct stat st;
	int r;

	/* Absolute paths: the daemon changes to / when it detaches. */
	vault_dir = realpath(o->vault, NULL);
	if (!vault_dir || stat(vault_dir, &st) < 0)
		return log_error_errno(-errno, "vault %s", o->vault);
	if (!S_ISDIR(st.st_mode))
		return log_error_errno(-ENOTDIR, "vault %s", o->vault);
	mnt = realpath(o->mountpoint, NULL);
	if (!mnt || stat(mnt, &st) < 0)
		return log_error_errno(-errno, "mount point %s", o->mountpoint);
	if (!S_ISDIR(st.st_mode))
		return log_error_errno(-ENOTDIR, "mount point %s", o->mountpoint);

	r = ferry_vault_open(vault_dir, 1, &fs.vault);
	if (r < 0)
		return log_error_errno(r, "cannot open vault %s%s", o->vault,
				       r == -ENOENT ? " (no catalog.db: not a vault?)" : "");
	r = ferry_chunk_cache_new(fs.vault, (size_t)o->cache_mib << 20, &fs.cache);
	if (r < 0)
		return log_error_errno(r, "cannot allocate the chunk cache");
	/* Read the catalog once now, so a damaged one fails the mount with a
	 * message instead of failing every request later. */
	r = snap_get(&fs, &s);
	if (r < 0)
		return log_error_errno(r, "cannot read the catalog of vault %s", o->vault);
	snap_unref(s);

	return serve(&fs, o, mnt);
}

int main(int argc, char *argv[])
{
	struct options o = {
		.cache_mib = CACHE_MIB_DEFAULT,
		.threads = THREADS_DEFAULT,
	};
	int r;

	log_set_program("ferryfs");
	r = parse_argv(argc, argv, &o);
	if (r <= 0) {
		free(o.fuse_opts);
		return r < 0 ? 1 : 0;
	}
	if (pthread_key_create(&readbuf_key, readbuf_free) != 0) {
		log_error("out of memory");
		return 1;
	}
	r = run(&o);
	free(o.fuse_opts);
	return r < 0 ? 1 : 0;
}
