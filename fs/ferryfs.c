/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * ferryfs: mounts a vault with the FUSE low-level API. Each VM is a
 * directory with its definition (vm.conf), its live disk images, its
 * recovery points (immutable images the kernel may cache across opens) and
 * its failovers, whose clone images are the only writable files (clone.h).
 * The view follows the replicator without a remount: every lookup, getattr,
 * opendir and open checks the catalog's generation and rebuilds an
 * in-memory snapshot of VMs, disks, points and failovers when it moved.
 * Inode numbers are computed from catalog ids, so the daemon keeps no
 * per-inode state and forget has nothing to do; per-open state (an image, a
 * clone, a rendered text file or a directory listing) lives in fi->fh.
 * Clones open on several handles share one overlay through a small registry
 * of open clones; a background thread flushes them every few seconds and
 * notices failovers that were cleaned up.
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
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "clone.h"
#include "ferry/blobs.h"
#include "ferry/catalog.h"
#include "ferry/changelog.h"
#include "ferry/diskcache.h"
#include "ferry/image.h"
#include "ferry/log.h"
#include "ferry/util.h"
#include "ferry/vault.h"
#include "ferry/vmdef.h"

/*
 * Inode numbers: 8 bits of kind, 40 bits of catalog id, 16 bits of disk
 * index:
 *
 *	ino = kind << 56 | id << 16 | idx
 *
 * The id is the VM's catalog id for per-VM nodes, the recovery point's
 * catalog id (unique across VMs) for per-point nodes and the failover's
 * catalog id (unique across VMs too) for per-failover nodes; idx is the disk's
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
	K_FAILOVER = 12,  /* <vm>/failovers/<name>/ (id: the failover's) */
	K_CLONE = 13,     /* <vm>/failovers/<name>/<disk>.img */
	K_DOMXML = 14,    /* <vm>/failovers/<name>/domain.xml */
	K_QEMUARGS = 15,  /* <vm>/failovers/<name>/qemu.args */
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
/* On-disk cache of objects fetched from a remote store. */
#define DISK_CACHE_MIB_DEFAULT 1024
/* The kernel's read-ahead on the mount. Its default of 128 KiB makes a
 * sequential reader wait on one 128 KiB request after another; 1 MiB (the
 * largest FUSE request) keeps whole requests in flight (docs/benchmarks.md). */
#define READ_AHEAD_KB_DEFAULT 1024
#define READ_AHEAD_KB_MAX (1ul << 20)
/* The I/O size images served direct suggest to readers (st_blksize): the
 * largest FUSE request. cat and cp size their buffers by it. */
#define DIRECT_IO_SIZE (1 << 20)

/* The background thread wakes every second to notice failovers that went
 * away, and flushes dirty clones every FLUSH_TICKS wake-ups. */
#define FLUSH_TICKS 5

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

struct frec {
	struct ferry_failover f;
	struct ferry_clone_disk *disks;
	size_t ndisks;
};

struct kv {
	char *key, *value;
};

struct vrec {
	struct ferry_vm vm;
	struct kv *res; /* target resources and description, in catalog order */
	size_t nres;
	struct ferry_disk *disks;
	size_t ndisks;
	struct prec *points; /* oldest first */
	size_t npoints;
	struct prec *latest, *latest_app;
	struct frec *failovers; /* id order */
	size_t nfailovers;
	char *conf; /* the text of vm.conf */
	size_t conflen;
};

/* pindex and findex start with their id: index_cmp orders both. */
struct pindex {
	int64_t id;
	struct vrec *vm;
	struct prec *point;
};

struct findex {
	int64_t id;
	struct vrec *vm;
	struct frec *fo;
};
_Static_assert(offsetof(struct pindex, id) == 0 && offsetof(struct findex, id) == 0,
	       "index_cmp reads the id at the start of both");

struct snap {
	unsigned refs;
	uint64_t gen;
	struct vrec *vms; /* name order */
	size_t nvms;
	struct pindex *pidx; /* sorted by point id, to resolve inodes */
	size_t npidx;
	struct findex *fidx; /* sorted by failover id */
	size_t nfidx;
};

/* Guards fs->snap and every snapshot's refs; taken inside the vault lock,
 * never around it. */
static pthread_mutex_t snap_lock = PTHREAD_MUTEX_INITIALIZER;

/* An open clone and how many users (open files, a flush in the background)
 * hold it. A clone leaves the registry when its last user goes and nothing
 * is left to flush, so the next open starts from the catalog again. */
struct creg {
	struct clone *c;
	unsigned users;
};

/* When a clone that left the registry was last flushed: its files' mtime. */
struct cmtime {
	int64_t failover_id;
	uint16_t idx;
	int64_t ns;
};

struct fs {
	struct ferry_vault *vault; /* readers: shared by every thread */
	/* A second handle on the same vault, opened read-write, for clone
	 * flushes only: their catalog transactions never make a reader wait
	 * on SQLite's busy handler while holding the readers' lock. NULL when
	 * the vault cannot be written: clones are read-only then. */
	struct ferry_vault *wvault;
	struct ferry_chunk_cache *cache;
	/* Objects fetched from a remote store, kept on local disk; NULL when
	 * off. Opened once before the daemon detaches (its lock and fds
	 * survive the fork) and put in front of every store handle. */
	struct ferry_diskcache *dcache;
	struct snap *snap; /* the newest view; holds one reference */
	uid_t uid;
	gid_t gid;
	int64_t mounted_ns;
	char *mnt;             /* absolute path of the mount point, for VM definitions */
	const char *vault_dir; /* absolute */
	char vault_id[64];     /* seeds the UUIDs of failed-over VMs */

	/* Guards the registry; taken before the vault lock, never inside it. */
	pthread_mutex_t reg_lock;
	struct creg *reg;
	size_t nreg;
	struct cmtime *mtimes;
	size_t nmtimes;

	/* The kernel's read-ahead for the mount, in KiB (0: left alone, as
	 * it is unless -o page_cache: direct reads have none), and
	 * the mount's device ("MAJ:MIN", empty if unknown), which names its
	 * backing device in /sys/class/bdi. ra_lock and ra_done make the first
	 * request set it, once (see req_fs). */
	unsigned long read_ahead_kb;
	char bdi[32];
	pthread_mutex_t ra_lock;
	int ra_done;

	/* -o page_cache: serve live and point images through the kernel's
	 * page cache instead of directly (see op_open). */
	int page_cache;

	/* The background flusher. */
	pthread_mutex_t bg_lock;
	pthread_cond_t bg_cond;
	pthread_t bg_thread;
	int bg_running;
	int bg_stop;
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
		for (size_t j = 0; j < v->nfailovers; j++)
			free(v->failovers[j].disks);
		free(v->failovers);
		for (size_t j = 0; j < v->nres; j++) {
			free(v->res[j].key);
			free(v->res[j].value);
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

static int failover_cb(const struct ferry_failover *f, void *userdata)
{
	struct vrec *v = userdata;
	struct frec *n;

	if (f->id <= 0 || f->id > ID_MAX)
		return 0;
	n = grow(&v->failovers, &v->nfailovers, sizeof(*n));
	if (!n)
		return -ENOMEM;
	n->f = *f;
	return 0;
}

static int clone_disk_cb(const struct ferry_clone_disk *d, void *userdata)
{
	struct frec *f = userdata;
	struct ferry_clone_disk *n;

	n = grow(&f->disks, &f->ndisks, sizeof(*n));
	if (!n)
		return -ENOMEM;
	*n = *d;
	return 0;
}

static int resource_cb(const char *kind, const char *value, void *userdata)
{
	struct vrec *v = userdata;
	struct kv *n;

	n = grow(&v->res, &v->nres, sizeof(*n));
	if (!n)
		return -ENOMEM;
	n->key = strdup(kind);
	n->value = strdup(value);
	return n->key && n->value ? 0 : -ENOMEM;
}

static const char *res_get(const struct vrec *v, const char *key)
{
	for (size_t i = 0; i < v->nres; i++)
		if (strcmp(v->res[i].key, key) == 0)
			return v->res[i].value;
	return NULL;
}

/* Orders pindex and findex entries alike: both start with their id. */
static int index_cmp(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

static struct pindex *pindex_find(const struct snap *s, int64_t id)
{
	struct pindex key = { .id = id };

	if (!s || s->npidx == 0)
		return NULL;
	return bsearch(&key, s->pidx, s->npidx, sizeof(key), index_cmp);
}

static struct findex *findex_find(const struct snap *s, int64_t id)
{
	struct findex key = { .id = id };

	if (!s || s->nfidx == 0)
		return NULL;
	return bsearch(&key, s->fidx, s->nfidx, sizeof(key), index_cmp);
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
	fprintf(f, "state = %s\n", ferry_vm_state_name(v->vm.state));
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
	r = ferry_catalog_resource_list(c, v->vm.id, resource_cb, v);
	for (size_t i = 0; r >= 0 && i < v->nres; i++)
		fprintf(f, "%s = %s\n", v->res[i].key, v->res[i].value);
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
	size_t n = 0, nf = 0;
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
				s->pidx[s->npidx++] = (struct pindex){
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
				s->fidx[s->nfidx++] = (struct findex){
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
	struct frec *fo;                      /* K_FAILOVER and below */
	const struct ferry_clone_disk *cdisk; /* K_CLONE */
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

static const struct ferry_clone_disk *cdisk_by_idx(const struct frec *f, unsigned idx)
{
	for (size_t i = 0; i < f->ndisks; i++)
		if (f->disks[i].idx == idx)
			return &f->disks[i];
	return NULL;
}

static int resolve(struct snap *s, fuse_ino_t ino, struct node *n)
{
	enum kind k = (enum kind)(ino >> 56);
	int64_t id = (int64_t)((ino >> 16) & ID_MAX);
	unsigned idx = ino & 0xffff;
	struct pindex *pi;
	struct findex *fi;

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
	case K_FAILOVER:
	case K_CLONE:
	case K_DOMXML:
	case K_QEMUARGS:
		fi = findex_find(s, id);
		if (!fi)
			return -ENOENT;
		n->vm = fi->vm;
		n->fo = fi->fo;
		if (k != K_CLONE)
			return idx == 0 ? 0 : -ENOENT;
		n->cdisk = cdisk_by_idx(n->fo, idx);
		return n->cdisk ? 0 : -ENOENT;
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
	case K_FAILOVER:
	case K_DOMXML:
	case K_QEMUARGS:
		return make_ino(n->kind, n->fo->f.id, 0);
	case K_CLONE:
		return make_ino(n->kind, n->fo->f.id, n->cdisk->idx);
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
	case K_FAILOVER:
		p.kind = K_FAILOVERS;
		break;
	case K_CLONE:
	case K_DOMXML:
	case K_QEMUARGS:
		p.kind = K_FAILOVER;
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

/* domain.xml and qemu.args of a failover: the VM's description from the
 * catalog, the failover's network and the clone images at their absolute
 * paths in this mount, rendered by the vmdef module. */
static int clone_image_path(const struct fs *fs, const struct vrec *v, const struct frec *fo,
			    const struct ferry_clone_disk *d, char *buf, size_t size)
{
	int n = snprintf(buf, size, "%s/%s/failovers/%s/%s.img", fs->mnt, v->vm.name, fo->f.name,
			 d->name);

	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

struct nicspec {
	char mac[18], ip[44], model[FERRY_NAME_MAX + 1];
	char *address; /* as vmdef picked it for the target subnet */
};

/* "mac=..,ip=A/P,model=.." as enable-replication stores it. */
static int parse_nic(const char *spec, struct nicspec *n)
{
	_cleanup_free_ char *copy = strdup(spec);
	char *save = NULL;

	if (!copy)
		return -ENOMEM;
	for (char *kv = strtok_r(copy, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(kv, '=');
		char *dst;
		size_t size;

		if (!eq)
			return -EINVAL;
		*eq++ = 0;
		if (strcmp(kv, "mac") == 0)
			dst = n->mac, size = sizeof(n->mac);
		else if (strcmp(kv, "ip") == 0)
			dst = n->ip, size = sizeof(n->ip);
		else if (strcmp(kv, "model") == 0)
			dst = n->model, size = sizeof(n->model);
		else
			continue; /* a newer writer's key */
		if (strlen(eq) >= size)
			return -EINVAL;
		strcpy(dst, eq);
	}
	return n->mac[0] ? 0 : -EINVAL;
}

static uint64_t res_uint(const struct vrec *v, const char *key, uint64_t def)
{
	const char *s = res_get(v, key);
	unsigned long long x;
	char *end;

	if (!s || !*s)
		return def;
	errno = 0;
	x = strtoull(s, &end, 10);
	return errno || *end || x == 0 ? def : (uint64_t)x;
}

static int render_vmdef(const struct fs *fs, const struct vrec *v, const struct frec *fo,
			enum kind kind, char **ret, size_t *ret_len)
{
	struct ferry_vmdef_disk disks[FERRY_VMDEF_MAX_DISKS];
	char paths[FERRY_VMDEF_MAX_DISKS][FERRY_PATH_MAX / 4];
	struct ferry_vmdef_nic nics[FERRY_VMDEF_MAX_NICS];
	struct nicspec specs[FERRY_VMDEF_MAX_NICS] = {};
	char name[2 * FERRY_NAME_MAX + 2], seed[256];
	struct ferry_vmdef d = {
		.name = name,
		.cpus = (unsigned)MIN(res_uint(v, "vm-cpus", 1), 4096u),
		.memory_mib = res_uint(v, "vm-memory-mib", 1024),
		.accel = fo->f.accel[0] ? fo->f.accel : NULL,
		.disks = disks,
		.nics = nics,
		.net = FERRY_VMDEF_NET_USER,
		.kind = fo->f.kind == FERRY_FAILOVER_REAL ? FERRY_VMDEF_FAILOVER :
							    FERRY_VMDEF_TEST_FAILOVER,
		.source_vm = v->vm.name,
		.recovery_point = fo->f.point_name,
		.resource_group = res_get(v, "target-group"),
		.availability_set = res_get(v, "availability-set"),
		.subnet = fo->f.subnet,
	};
	char *text = NULL;
	int r = 0;

	snprintf(name, sizeof(name), "%s-%s", v->vm.name, fo->f.name);
	snprintf(seed, sizeof(seed), "%s/%s/%s/%" PRId64, fs->vault_id, v->vm.name, fo->f.name,
		 fo->f.id);
	ferry_vmdef_uuid_from_seed(seed, strlen(seed), d.uuid);
	for (size_t i = 0; r >= 0 && i < fo->ndisks && i < FERRY_VMDEF_MAX_DISKS; i++) {
		r = clone_image_path(fs, v, fo, &fo->disks[i], paths[i], sizeof(paths[i]));
		disks[i] = (struct ferry_vmdef_disk){ fo->disks[i].name, paths[i] };
		d.n_disks++;
	}
	for (size_t i = 0; r >= 0 && d.n_nics < FERRY_VMDEF_MAX_NICS; i++) {
		struct nicspec *n = &specs[d.n_nics];
		const char *spec;
		char key[32];

		snprintf(key, sizeof(key), "nic.%zu", i);
		spec = res_get(v, key);
		if (!spec)
			break;
		r = parse_nic(spec, n);
		if (r < 0)
			break;
		/* A static address stays where the target subnet has room for it;
		 * a subnet given by name only leaves it as it is. */
		if (n->ip[0] &&
		    ferry_vmdef_pick_address(n->ip, fo->f.subnet, NULL, 0, &n->address) < 0)
			n->address = NULL;
		nics[d.n_nics++] = (struct ferry_vmdef_nic){
			.mac = n->mac,
			.address = n->address ? n->address :
				   n->ip[0]   ? n->ip :
						NULL,
			.network = fo->f.network,
			.model = n->model[0] ? n->model : NULL,
		};
	}
	if (r >= 0)
		r = kind == K_DOMXML ? ferry_vmdef_domain_xml(&d, &text) :
				       ferry_vmdef_qemu_args(&d, &text);
	for (size_t i = 0; i < ARRAY_SIZE(specs); i++)
		free(specs[i].address);
	if (r < 0) {
		/* Still a readable file: say why there is no definition. */
		log_error_errno(r, "VM %s failover %s: cannot render its %s", v->vm.name,
				fo->f.name, kind == K_DOMXML ? "domain.xml" : "qemu.args");
		if (asprintf(&text,
			     kind == K_DOMXML ?
				     "<!-- ferry: no VM definition for failover %s of VM "
				     "%s: %s -->\n" :
				     "# ferry: no qemu command line for failover %s of "
				     "VM %s: %s\n",
			     fo->f.name, v->vm.name, strerror(-r)) < 0)
			return -ENOMEM;
	}
	*ret = text;
	*ret_len = strlen(text);
	return 0;
}

/* ---- the registry of open clones ---- */

static struct creg *reg_find(struct fs *fs, int64_t failover_id, uint16_t idx)
{
	for (size_t i = 0; i < fs->nreg; i++)
		if (clone_failover_id(fs->reg[i].c) == failover_id &&
		    clone_idx(fs->reg[i].c) == idx)
			return &fs->reg[i];
	return NULL;
}

static void mtime_note(struct fs *fs, int64_t failover_id, uint16_t idx, int64_t ns)
{
	struct cmtime *m;

	if (ns <= 0)
		return;
	for (size_t i = 0; i < fs->nmtimes; i++)
		if (fs->mtimes[i].failover_id == failover_id && fs->mtimes[i].idx == idx) {
			fs->mtimes[i].ns = ns;
			return;
		}
	m = grow(&fs->mtimes, &fs->nmtimes, sizeof(*m));
	if (m)
		*m = (struct cmtime){ failover_id, idx, ns };
}

/* The clone's last flush in this process, or its failover's creation. */
static int64_t clone_file_time(struct fs *fs, const struct frec *fo,
			       const struct ferry_clone_disk *d)
{
	int64_t t = 0;
	struct creg *e;

	pthread_mutex_lock(&fs->reg_lock);
	e = reg_find(fs, fo->f.id, d->idx);
	if (e)
		t = clone_mtime(e->c);
	for (size_t i = 0; t == 0 && i < fs->nmtimes; i++)
		if (fs->mtimes[i].failover_id == fo->f.id && fs->mtimes[i].idx == d->idx)
			t = fs->mtimes[i].ns;
	pthread_mutex_unlock(&fs->reg_lock);
	return t > 0 ? t : fo->f.created_ns;
}

struct row_find {
	uint16_t idx;
	int found;
	struct ferry_clone_disk d;
};

static int row_find_cb(const struct ferry_clone_disk *d, void *userdata)
{
	struct row_find *rf = userdata;

	if (d->idx == rf->idx) {
		rf->d = *d;
		rf->found = 1;
	}
	return 0;
}

/*
 * Takes the shared clone of a clone disk, opening it if nobody has. A new
 * clone starts from the row in the catalog, not from the caller's
 * snapshot: that may predate the flush of a clone that was just closed.
 */
static int reg_get(struct fs *fs, const struct vrec *v, const struct frec *fo,
		   const struct ferry_clone_disk *d, struct clone **ret)
{
	struct row_find rf = { .idx = d->idx };
	char label[3 * FERRY_NAME_MAX + 3];
	struct clone *c = NULL;
	struct creg *e;
	int r;

	pthread_mutex_lock(&fs->reg_lock);
	e = reg_find(fs, fo->f.id, d->idx);
	if (e) {
		e->users++;
		*ret = e->c;
		pthread_mutex_unlock(&fs->reg_lock);
		return 0;
	}
	ferry_vault_lock(fs->vault);
	r = ferry_catalog_clone_disks(ferry_vault_catalog(fs->vault), fo->f.id, row_find_cb, &rf);
	ferry_vault_unlock(fs->vault);
	if (r >= 0 && !rf.found)
		r = -ENOENT;
	snprintf(label, sizeof(label), "%s/%s/%s", v->vm.name, fo->f.name, d->name);
	if (r >= 0)
		r = clone_new(fs->cache, fs->wvault, &rf.d, label, &c);
	if (r >= 0) {
		e = grow(&fs->reg, &fs->nreg, sizeof(*e));
		if (!e) {
			clone_free(c);
			r = -ENOMEM;
		} else {
			e->c = c;
			e->users = 1;
			*ret = c;
		}
	}
	pthread_mutex_unlock(&fs->reg_lock);
	return r;
}

/* Drops a user; the last one takes a clean clone out of the registry. A
 * dirty one stays for the background flusher. */
static void reg_put(struct fs *fs, struct clone *c)
{
	struct clone *gone = NULL;

	pthread_mutex_lock(&fs->reg_lock);
	for (size_t i = 0; i < fs->nreg; i++) {
		struct creg *e = &fs->reg[i];

		if (e->c != c)
			continue;
		assert(e->users > 0);
		if (--e->users == 0 && clone_dirty_bytes(c) == 0) {
			mtime_note(fs, clone_failover_id(c), clone_idx(c), clone_mtime(c));
			gone = c;
			fs->reg[i] = fs->reg[--fs->nreg];
		}
		break;
	}
	pthread_mutex_unlock(&fs->reg_lock);
	clone_free(gone);
}

/*
 * One pass of the background flusher: clones of failovers that left the
 * catalog are discarded (their open files fail from now on), and with
 * flush set every dirty clone is flushed. Also the final flush at unmount.
 */
static void reg_sweep(struct fs *fs, struct snap *s, int flush)
{
	for (size_t i = 0;; i++) {
		struct clone *c = NULL;

		pthread_mutex_lock(&fs->reg_lock);
		for (; i < fs->nreg; i++) {
			struct creg *e = &fs->reg[i];

			if (s && !findex_find(s, clone_failover_id(e->c))) {
				clone_discard(e->c, -ENOENT);
				if (e->users == 0) {
					clone_free(e->c);
					fs->reg[i--] = fs->reg[--fs->nreg];
				}
				continue;
			}
			if (flush && clone_dirty_bytes(e->c) > 0) {
				e->users++;
				c = e->c;
				break;
			}
		}
		pthread_mutex_unlock(&fs->reg_lock);
		if (!c)
			return;
		(void)clone_flush(c); /* logs its own failure; retried next time */
		/* reg_put may move the last entry into slot i: that one waits
		 * for the next pass. */
		reg_put(fs, c);
	}
}

static void *bg_main(void *userdata)
{
	struct fs *fs = userdata;
	unsigned tick = 0;

	pthread_mutex_lock(&fs->bg_lock);
	while (!fs->bg_stop) {
		struct timespec ts;
		struct snap *s = NULL;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 1;
		pthread_cond_timedwait(&fs->bg_cond, &fs->bg_lock, &ts);
		if (fs->bg_stop)
			break;
		pthread_mutex_unlock(&fs->bg_lock);
		if (snap_get(fs, &s) < 0)
			s = NULL;
		reg_sweep(fs, s, ++tick % FLUSH_TICKS == 0);
		snap_unref(s);
		pthread_mutex_lock(&fs->bg_lock);
	}
	pthread_mutex_unlock(&fs->bg_lock);
	return NULL;
}

static void bg_stop(struct fs *fs)
{
	if (!fs->bg_running)
		return;
	pthread_mutex_lock(&fs->bg_lock);
	fs->bg_stop = 1;
	pthread_cond_signal(&fs->bg_cond);
	pthread_mutex_unlock(&fs->bg_lock);
	pthread_join(fs->bg_thread, NULL);
	fs->bg_running = 0;
}

static struct timespec ns_to_ts(int64_t ns)
{
	if (ns < 0)
		ns = 0;
	return (struct timespec){ .tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000 };
}

/* Without the page cache every read is a request: ask for large ones. */
static blksize_t image_blksize(const struct fs *fs)
{
	return fs->page_cache ? FERRY_BLOCK_SIZE : DIRECT_IO_SIZE;
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
		st->st_blksize = image_blksize(fs);
		/* The live view's time: a new marker changes it, which also
		 * tells the kernel to drop cached pages (auto_inval_data,
		 * with -o page_cache). */
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
		st->st_blksize = image_blksize(fs);
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
	case K_FAILOVER:
		st->st_mode = S_IFDIR | 0555;
		st->st_nlink = 2;
		when = n->fo->f.created_ns;
		break;
	case K_CLONE:
		st->st_mode = S_IFREG | (fs->wvault ? 0644 : 0444);
		st->st_nlink = 1;
		st->st_size = (off_t)n->cdisk->size;
		when = clone_file_time(fs, n->fo, n->cdisk);
		break;
	case K_DOMXML:
	case K_QEMUARGS: {
		_cleanup_free_ char *text = NULL;
		size_t len;

		r = render_vmdef(fs, n->vm, n->fo, n->kind, &text, &len);
		if (r < 0)
			return r;
		st->st_mode = S_IFREG | 0444;
		st->st_nlink = 1;
		st->st_size = (off_t)len;
		when = n->fo->f.created_ns;
		break;
	}
	}
	st->st_blocks = (st->st_size + 511) / 512;
	/* How much of an image is allocated is not known without walking its
	 * whole map. Claiming one block less than full makes cp, tar and rsync
	 * take the file for sparse and ask SEEK_DATA/SEEK_HOLE, which is exact. */
	if ((n->kind == K_LIVE || n->kind == K_PIMAGE || n->kind == K_CLONE) && st->st_blocks > 0)
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
		n->kind = K_FAILOVER;
		for (size_t i = 0; i < parent->vm->nfailovers; i++)
			if (strcmp(parent->vm->failovers[i].f.name, name) == 0) {
				n->fo = &parent->vm->failovers[i];
				return 0;
			}
		return -ENOENT;
	case K_FAILOVER:
		n->fo = parent->fo;
		if (strcmp(name, "domain.xml") == 0) {
			n->kind = K_DOMXML;
			return 0;
		}
		if (strcmp(name, "qemu.args") == 0) {
			n->kind = K_QEMUARGS;
			return 0;
		}
		if (strip_img(name, base, sizeof(base)) < 0)
			return -ENOENT;
		n->kind = K_CLONE;
		for (size_t i = 0; i < parent->fo->ndisks; i++)
			if (strcmp(parent->fo->disks[i].name, base) == 0) {
				n->cdisk = &parent->fo->disks[i];
				return 0;
			}
		return -ENOENT;
	default:
		return -ENOTDIR;
	}
}

/* ---- per-open state ---- */

struct handle {
	struct ferry_image *img; /* images */
	char *text;              /* vm.conf, info, domain.xml, qemu.args */
	size_t len;
	struct fs *fs;
	struct clone *clone; /* clone images: shared, from the registry */
	int writable;        /* opened for writing: close flushes */
};

static void handle_free(struct handle *h)
{
	if (!h)
		return;
	ferry_image_free(h->img);
	if (h->clone)
		reg_put(h->fs, h->clone);
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
		c.kind = K_FAILOVER;
		for (size_t i = 0; r >= 0 && i < n->vm->nfailovers; i++) {
			c.fo = &n->vm->failovers[i];
			r = dirbuf_add(req, d, c.fo->f.name, node_ino(&c), S_IFDIR);
		}
		return r;
	case K_FAILOVER:
		c.kind = K_CLONE;
		for (size_t i = 0; r >= 0 && i < n->fo->ndisks; i++) {
			c.cdisk = &n->fo->disks[i];
			snprintf(name, sizeof(name), "%s.img", c.cdisk->name);
			r = dirbuf_add(req, d, name, node_ino(&c), S_IFREG);
		}
		if (r >= 0) {
			c.kind = K_DOMXML;
			r = dirbuf_add(req, d, "domain.xml", node_ino(&c), S_IFREG);
		}
		if (r >= 0) {
			c.kind = K_QEMUARGS;
			r = dirbuf_add(req, d, "qemu.args", node_ino(&c), S_IFREG);
		}
		return r;
	default:
		return -ENOTDIR;
	}
}

/* ---- FUSE operations: each replies exactly once ---- */

/*
 * Sets the mount's read-ahead. Not before the session loop runs: the reply
 * to FUSE_INIT lowers the backing device's read-ahead to what the kernel
 * offered at mount time (its 128 KiB default), and the kernel sends no other
 * request until that reply is in. So the first request after it sets it,
 * before any file can be opened (a file takes its read-ahead from the
 * device when opened). Best effort: only root may write to sysfs.
 */
static int read_ahead_write(const struct fs *fs)
{
	_cleanup_free_ char *path = NULL;
	char val[32];
	int fd, n, r = 0;

	n = snprintf(val, sizeof(val), "%lu\n", fs->read_ahead_kb);
	if (asprintf(&path, "/sys/class/bdi/%s/read_ahead_kb", fs->bdi) < 0)
		return -ENOMEM;
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (write(fd, val, (size_t)n) != n)
		r = errno ? -errno : -EIO;
	close(fd);
	return r;
}

static void read_ahead_apply(struct fs *fs)
{
	int r;

	if (__atomic_load_n(&fs->ra_done, __ATOMIC_ACQUIRE))
		return;
	pthread_mutex_lock(&fs->ra_lock);
	if (!fs->ra_done && fs->read_ahead_kb > 0) {
		r = fs->bdi[0] ? read_ahead_write(fs) : -ENODEV;
		if (r == -EACCES || r == -EPERM || r == -EROFS)
			log_debug_errno(r, "cannot set the read-ahead of %s to %lu KiB (not root?)",
					fs->mnt, fs->read_ahead_kb);
		else if (r < 0)
			log_internal(LOG_INFO, r, "cannot set the read-ahead of %s to %lu KiB",
				     fs->mnt, fs->read_ahead_kb);
		else
			log_debug("read-ahead of %s (bdi %s): %lu KiB", fs->mnt, fs->bdi,
				  fs->read_ahead_kb);
	}
	__atomic_store_n(&fs->ra_done, 1, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&fs->ra_lock);
}

/* Every request handler that needs the file system starts here. */
static struct fs *req_fs(fuse_req_t req)
{
	struct fs *fs = fuse_req_userdata(req);

	read_ahead_apply(fs);
	return fs;
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	struct fs *fs = userdata;

	/* Data changes under the live images: let an mtime change drop
	 * cached pages. Recovery-point images never change. */
	if (conn->capable & FUSE_CAP_AUTO_INVAL_DATA)
		conn->want |= FUSE_CAP_AUTO_INVAL_DATA;
	/* Truncation comes as setattr, where clones refuse a new size. */
	conn->want &= ~FUSE_CAP_ATOMIC_O_TRUNC;
	/* Here, not before the mount: the daemon forks when it detaches, and
	 * threads do not survive that. */
	if (fs->wvault && !fs->bg_running) {
		if (pthread_create(&fs->bg_thread, NULL, bg_main, fs) == 0)
			fs->bg_running = 1;
		else
			log_error("cannot start the clone flusher: clones are flushed on "
				  "fsync and close only");
	}
}

/* Unmount: whatever the clones still hold goes into the vault. */
static void fs_flush_all(struct fs *fs)
{
	bg_stop(fs);
	reg_sweep(fs, NULL, 1);
}

static void op_destroy(void *userdata)
{
	fs_flush_all(userdata);
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
	int writing = (fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC);
	struct handle *h;
	struct node n;
	int r;

	r = snap_get(fs, &s);
	if (r >= 0)
		r = resolve(s, ino, &n);
	if (r >= 0 && writing && (n.kind != K_CLONE || !fs->wvault))
		r = -EROFS;
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	h = calloc(1, sizeof(*h));
	if (!h) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	h->fs = fs;

	/* O_DIRECT is accepted as it is (qemu's cache=none uses it); reads
	 * are served the same way either way.
	 *
	 * Disk images are served direct by default: every read comes here,
	 * the kernel keeps no copy of what the chunk cache already holds, and
	 * a large read is answered straight into the reader's buffer. A cold
	 * 1 MiB-at-a-time read of a 2 GiB point runs 1.1 GB/s that way
	 * against 0.8 through the page cache (docs/benchmarks.md); reads of
	 * 4 KiB at a time lose the kernel's read-ahead and run 3x slower,
	 * which is what -o page_cache is for. */
	fi->direct_io = 0;
	fi->keep_cache = 0;
	switch (n.kind) {
	case K_LIVE:
		/* The live map moves on: resolve it now, never keep pages. */
		fi->direct_io = !fs->page_cache;
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
		fi->direct_io = !fs->page_cache;
		fi->keep_cache = fs->page_cache;
		break;
	case K_PINFO:
		r = render_info(n.point, &h->text, &h->len);
		fi->keep_cache = 1;
		break;
	case K_CLONE:
		r = reg_get(fs, n.vm, n.fo, n.cdisk, &h->clone);
		if (r < 0)
			log_error_errno(r, "VM %s failover %s disk %s: cannot open clone",
					n.vm->vm.name, n.fo->f.name, n.cdisk->name);
		h->writable = writing;
		/* Every open sees the shared overlay: no page cache in the way
		 * (and O_DIRECT works the same). */
		fi->direct_io = 1;
		break;
	case K_DOMXML:
	case K_QEMUARGS:
		r = render_vmdef(fs, n.vm, n.fo, n.kind, &h->text, &h->len);
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

/* Per worker thread, kept across requests: the buffer for reads that copy
 * (clones; sequential readers ask for up to 1 MiB at a time, and a fresh
 * allocation of that size is an mmap and page faults every time), and the
 * piece list for image reads that do not. */
static pthread_key_t readbuf_key;
struct readbuf {
	void *p;
	size_t size;
	struct ferry_image_iov *iov;
};

static void readbuf_free(void *p)
{
	struct readbuf *b = p;

	ferry_image_iov_free(b->iov);
	free(b->p);
	free(b);
}

static struct readbuf *readbuf_self(void)
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
	return b;
}

static void *readbuf_get(size_t size)
{
	struct readbuf *b = readbuf_self();

	if (!b)
		return NULL;
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

static void reply_read_error(fuse_req_t req, fuse_ino_t ino, off_t off, int r)
{
	log_error_errno(r, "read of inode %" PRIx64 " at %" PRIu64 " failed", (uint64_t)ino,
			(uint64_t)off);
	/* A damaged vault is a medium error to the reader. */
	fuse_reply_err(req, r == -EBADMSG ? EIO : -r);
}

/*
 * An image read answered straight from the chunk cache: the reply is
 * written from the cached chunks (writev), which stay held until it is
 * sent, so the bytes are copied once, into the reader's page cache.
 * Returns 0 once it replied; -E2BIG (too many pieces for one writev) or
 * -ENOMEM where the caller should copy instead.
 */
static int read_image_iov(fuse_req_t req, fuse_ino_t ino, struct ferry_image *img, size_t size,
			  off_t off)
{
	struct readbuf *b = readbuf_self();
	const struct iovec *iov;
	size_t n;
	ssize_t r;

	if (!b || (!b->iov && ferry_image_iov_new(&b->iov) < 0))
		return -ENOMEM;
	/* libfuse adds the reply header to the pieces. */
	r = ferry_image_read_iov(img, size, (uint64_t)off, b->iov, IOV_MAX - 1, &iov, &n);
	if (r == -E2BIG || r == -ENOMEM)
		return (int)r;
	if (r < 0)
		reply_read_error(req, ino, off, (int)r);
	else if (n == 0)
		fuse_reply_buf(req, NULL, 0);
	else
		fuse_reply_iov(req, iov, (int)n);
	ferry_image_iov_release(b->iov);
	return 0;
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
	if (!h->clone && read_image_iov(req, ino, h->img, size, off) == 0)
		return;
	buf = readbuf_get(size);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if (h->clone)
		n = clone_read(h->clone, buf, size, (uint64_t)off);
	else
		n = ferry_image_read(h->img, buf, size, (uint64_t)off);
	if (n < 0) {
		reply_read_error(req, ino, off, (int)n);
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
	} else if (h->clone)
		r = clone_seek(h->clone, (uint64_t)off, whence, &pos);
	else
		r = ferry_image_seek(h->img, (uint64_t)off, whence, &pos);
	if (r < 0) {
		fuse_reply_err(req, r == -EBADMSG ? EIO : -r);
		return;
	}
	fuse_reply_lseek(req, (off_t)pos);
}

/* A flush error is an I/O error to the writer; a removed failover is gone. */
static int flush_errno(int r)
{
	if (r == -ENOENT || r == -ENOSPC || r == -EDQUOT || r == -ENOMEM || r == -EROFS)
		return -r;
	return EIO;
}

/* close(): what this file wrote is durable before close returns. */
static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	int r = 0;

	if (h->clone && h->writable)
		r = clone_flush(h->clone);
	fuse_reply_err(req, r < 0 ? flush_errno(r) : 0);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	int r = 0;

	if (h->clone)
		r = clone_flush(h->clone);
	fuse_reply_err(req, r < 0 ? flush_errno(r) : 0);
}

/* fsync of a failover's directory: every open clone of it. */
static void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct fs *fs = req_fs(req);
	int64_t id = (int64_t)((ino >> 16) & ID_MAX);
	int r = 0;

	if ((enum kind)(ino >> 56) != K_FAILOVER) {
		fuse_reply_err(req, 0);
		return;
	}
	for (size_t i = 0;; i++) {
		struct clone *c = NULL;
		int k;

		pthread_mutex_lock(&fs->reg_lock);
		for (; i < fs->nreg; i++)
			if (clone_failover_id(fs->reg[i].c) == id) {
				fs->reg[i].users++;
				c = fs->reg[i].c;
				break;
			}
		pthread_mutex_unlock(&fs->reg_lock);
		if (!c)
			break;
		k = clone_flush(c);
		if (k < 0 && r >= 0)
			r = k;
		reg_put(fs, c);
	}
	fuse_reply_err(req, r < 0 ? flush_errno(r) : 0);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	handle_free((struct handle *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct fs *fs = req_fs(req);
	struct statvfs st = {
		.f_bsize = FERRY_BLOCK_SIZE,
		.f_frsize = FERRY_BLOCK_SIZE,
		.f_namemax = 255,
		.f_flag = fs->wvault ? 0 : ST_RDONLY,
	};

	fuse_reply_statfs(req, &st);
}

static void op_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
	struct fs *fs = req_fs(req);
	int writable = (enum kind)(ino >> 56) == K_CLONE && fs->wvault;

	fuse_reply_err(req, (mask & W_OK) && !writable ? EROFS : 0);
}

/*
 * Only clone images change, and only their bytes: a clone has the size of
 * its disk for good (like a block device: truncation to another size is
 * EINVAL), and times and modes are not kept. Touching the times is accepted
 * and ignored, so that tools which set them after a copy succeed.
 */
static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	struct fs *fs = req_fs(req);
	_cleanup_snap_ struct snap *s = NULL;
	const int times = FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_ATIME_NOW |
			  FUSE_SET_ATTR_MTIME_NOW | FUSE_SET_ATTR_CTIME;
	struct stat st;
	struct node n;
	double timeout;
	int r;

	if ((enum kind)(ino >> 56) != K_CLONE || !fs->wvault) {
		fuse_reply_err(req, EROFS);
		return;
	}
	r = snap_get(fs, &s);
	if (r >= 0)
		r = resolve(s, ino, &n);
	if (r >= 0 && (to_set & FUSE_SET_ATTR_SIZE) && (uint64_t)attr->st_size != n.cdisk->size)
		r = -EINVAL;
	if (r >= 0 && (to_set & ~(times | FUSE_SET_ATTR_SIZE)))
		r = -EPERM;
	if (r >= 0)
		r = node_stat(fs, &n, &st, &timeout);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	fuse_reply_attr(req, &st, timeout);
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
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	ssize_t n;

	if (!h->clone || !h->writable) {
		fuse_reply_err(req, h->clone ? EBADF : EROFS);
		return;
	}
	if (off < 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	n = clone_write(h->clone, buf, size, (uint64_t)off);
	if (n < 0) {
		fuse_reply_err(req, n == -EBADMSG ? EIO : (int)-n);
		return;
	}
	fuse_reply_write(req, (size_t)n);
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
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;

	/* A clone is fully allocated already; hole punching is not offered. */
	fuse_reply_err(req, h && h->clone ? EOPNOTSUPP : EROFS);
}

static void op_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in,
			       struct fuse_file_info *fi_in, fuse_ino_t ino_out, off_t off_out,
			       struct fuse_file_info *fi_out, size_t len, int flags)
{
	fuse_reply_err(req, EROFS);
}

static const struct fuse_lowlevel_ops ops = {
	.init = op_init,
	.destroy = op_destroy,
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
	.fsync = op_fsync,
	.fsyncdir = op_fsyncdir,
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
	       "Mounts the vault DIR at MOUNTPOINT: its VMs, live disk images and recovery\n"
	       "points (read-only), and the writable clone images of its failovers.\n"
	       "Unmount with `fusermount3 -u MOUNTPOINT`.\n"
	       "\n"
	       "Options:\n"
	       "  --vault DIR          the vault to show (required)\n"
	       "  -f, --foreground     stay in the foreground\n"
	       "  -d, --debug          log every FUSE request (implies -f)\n"
	       "  -o OPT[,OPT...]      mount options: allow_other, default_permissions,\n"
	       "                       cache_size=MIB, threads=N, ro (clones read-only\n"
	       "                       too), readahead=CHUNKS and readahead_threads=N\n"
	       "                       (read-ahead for sequential readers; 0 turns it off),\n"
	       "                       page_cache (serve live and point images through the\n"
	       "                       kernel's page cache: faster for reads of a few KiB\n"
	       "                       at a time, slower for large ones; default: direct),\n"
	       "                       read_ahead_kb=KIB (the kernel's read-ahead on the\n"
	       "                       mount with page_cache, set as root; default %d, 0\n"
	       "                       leaves it alone),\n"
	       "                       and the FUSE ones\n"
	       "  --cache-size MIB     decompressed chunk cache (default %d MiB)\n"
	       "  --threads N          most worker threads (default %d)\n"
	       "  --disk-cache DIR     where objects fetched from a remote store are kept\n"
	       "                       (default $XDG_CACHE_HOME/ferryfs/VAULT_ID, or\n"
	       "                       ~/.cache/ferryfs/VAULT_ID); also -o disk_cache=DIR\n"
	       "  --disk-cache-size MIB  its size limit (default %d MiB; 0 turns it off);\n"
	       "                       also -o disk_cache_size=MIB\n"
	       "  -h, --help           show this help\n"
	       "  --version            show the version\n",
	       READ_AHEAD_KB_DEFAULT, CACHE_MIB_DEFAULT, THREADS_DEFAULT, DISK_CACHE_MIB_DEFAULT);
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
	int readonly; /* -o ro: clones read-only too */
	/* Read-ahead in chunks and its threads; -1: the chunk cache's
	 * default, which depends on where the store is. */
	long readahead, readahead_threads;
	unsigned long read_ahead_kb; /* the kernel's, on the mount; 0: its default */
	int page_cache;              /* -o page_cache */
	char *fuse_opts;             /* what remains of -o for libfuse */
	char *disk_cache;            /* --disk-cache; NULL: the default place, for a remote store */
	unsigned long disk_cache_mib;
};

/* Up to 64 TiB; anything more is a typo. */
#define DISK_CACHE_MIB_MAX (64ul << 20)

static int set_disk_cache(struct options *o, const char *dir)
{
	char *d;

	if (!*dir)
		return log_error_errno(-EINVAL, "empty disk cache directory");
	d = strdup(dir);
	if (!d)
		return log_error_errno(-ENOMEM, "out of memory");
	free(o->disk_cache);
	o->disk_cache = d;
	return 0;
}

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
		if (strncmp(opt, "disk_cache=", 11) == 0) {
			if (set_disk_cache(o, opt + 11) < 0)
				return -EINVAL;
			continue;
		}
		if (strncmp(opt, "disk_cache_size=", 16) == 0) {
			if (parse_uint(opt + 16, DISK_CACHE_MIB_MAX, &o->disk_cache_mib) < 0)
				return log_error_errno(-EINVAL, "invalid disk_cache_size: %s",
						       opt + 16);
			continue;
		}
		if (strncmp(opt, "threads=", 8) == 0) {
			if (parse_uint(opt + 8, 1024, &o->threads) < 0 || o->threads == 0)
				return log_error_errno(-EINVAL, "invalid threads: %s", opt + 8);
			continue;
		}
		if (strncmp(opt, "readahead=", 10) == 0) {
			unsigned long v;

			if (parse_uint(opt + 10, 1024, &v) < 0)
				return log_error_errno(-EINVAL, "invalid readahead: %s", opt + 10);
			o->readahead = (long)v;
			continue;
		}
		if (strncmp(opt, "readahead_threads=", 18) == 0) {
			unsigned long v;

			if (parse_uint(opt + 18, 64, &v) < 0)
				return log_error_errno(-EINVAL, "invalid readahead_threads: %s",
						       opt + 18);
			o->readahead_threads = (long)v;
			continue;
		}
		if (strncmp(opt, "read_ahead_kb=", 14) == 0) {
			if (parse_uint(opt + 14, READ_AHEAD_KB_MAX, &o->read_ahead_kb) < 0)
				return log_error_errno(-EINVAL, "invalid read_ahead_kb: %s",
						       opt + 14);
			continue;
		}
		if (strcmp(opt, "page_cache") == 0) {
			o->page_cache = 1;
			continue;
		}
		if (strcmp(opt, "ro") == 0 || strcmp(opt, "rw") == 0) {
			/* Only clones are writable: ro is ours to enforce. */
			o->readonly = strcmp(opt, "ro") == 0;
			continue;
		}
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
		ARG_VERSION,
		ARG_DISK_CACHE,
		ARG_DISK_CACHE_SIZE,
	};
	static const struct option longopts[] = {
		{ "vault", required_argument, NULL, ARG_VAULT },
		{ "cache-size", required_argument, NULL, ARG_CACHE },
		{ "threads", required_argument, NULL, ARG_THREADS },
		{ "disk-cache", required_argument, NULL, ARG_DISK_CACHE },
		{ "disk-cache-size", required_argument, NULL, ARG_DISK_CACHE_SIZE },
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
		case ARG_DISK_CACHE:
			if (set_disk_cache(o, optarg) < 0)
				return -EINVAL;
			break;
		case ARG_DISK_CACHE_SIZE:
			if (parse_uint(optarg, DISK_CACHE_MIB_MAX, &o->disk_cache_mib) < 0)
				return log_error_errno(-EINVAL, "invalid --disk-cache-size: %s",
						       optarg);
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

/* Undoes the octal escapes (\040 for a space, ...) of mountinfo in place. */
static void mountinfo_unescape(char *s)
{
	char *w = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*w++ = (char)((s[1] - '0') << 6 | (s[2] - '0') << 3 | (s[3] - '0'));
			s += 3;
		} else
			*w++ = *s;
	}
	*w = '\0';
}

/*
 * The device number ("MAJ:MIN") of the FUSE mount on mnt, from
 * /proc/self/mountinfo: a stat() of the mount point would be a request to
 * this daemon, which serves none yet. The last match is the newest mount,
 * ours. -ENOENT if there is none.
 */
static int mount_bdi(const char *mnt, char *ret, size_t size)
{
	_cleanup_fclose_ FILE *f = fopen("/proc/self/mountinfo", "re");
	_cleanup_free_ char *line = NULL;
	size_t cap = 0;
	int found = 0;

	if (!f)
		return -errno;
	while (getline(&line, &cap, f) > 0) {
		char *save = NULL, *dev, *point, *sep;

		/* ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [TAGS...] - TYPE ... */
		if (!strtok_r(line, " ", &save) || !strtok_r(NULL, " ", &save))
			continue;
		dev = strtok_r(NULL, " ", &save);
		if (!dev || !strtok_r(NULL, " ", &save))
			continue;
		point = strtok_r(NULL, " ", &save);
		if (!point)
			continue;
		mountinfo_unescape(point);
		if (strcmp(point, mnt) != 0)
			continue;
		while ((sep = strtok_r(NULL, " ", &save)) && strcmp(sep, "-") != 0)
			;
		sep = sep ? strtok_r(NULL, " ", &save) : NULL;
		if (!sep || strncmp(sep, "fuse", 4) != 0 || strlen(dev) >= size)
			continue;
		strcpy(ret, dev);
		found = 1;
	}
	return found ? 0 : -ENOENT;
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
	/* Normally op_destroy did this; not when the mount never started. */
	fs_flush_all(fs);
	for (size_t i = 0; i < fs->nreg; i++)
		clone_free(fs->reg[i].c);
	free(fs->reg);
	free(fs->mtimes);
	free(fs->mnt);
	pthread_mutex_lock(&snap_lock);
	if (fs->snap && --fs->snap->refs == 0)
		snap_free(fs->snap);
	fs->snap = NULL;
	pthread_mutex_unlock(&snap_lock);
	ferry_chunk_cache_free(fs->cache);
	ferry_vault_free(fs->wvault);
	ferry_vault_free(fs->vault);
	/* After the stores that read through it. */
	ferry_diskcache_free(fs->dcache);
}

/*
 * The writer's handle on the vault, for clones. A vault that cannot be
 * written (read-only media, another user's files) still mounts: its clones
 * are read-only then. SQLite opens a write-protected database read-only
 * without a word, so writability is asked of the files first.
 */
static int open_writer(struct fs *fs, const char *dir)
{
	_cleanup_free_ char *db = NULL;
	int r;

	if (asprintf(&db, "%s/catalog.db", dir) < 0)
		return -ENOMEM;
	if (access(dir, W_OK) < 0 || access(db, W_OK) < 0)
		r = -errno;
	else
		r = ferry_vault_open(dir, 0, &fs->wvault);
	if (r == -EROFS || r == -EACCES || r == -EPERM) {
		log_info("vault %s is not writable: failover clones are read-only", dir);
		return 0;
	}
	return r;
}

/*
 * Opens the vault (and its writer handle, the chunk cache), and reads the
 * catalog once so a damaged one fails the mount with a message. Done again
 * after the daemon detaches: SQLite connections must not cross a fork (the
 * child would not hold the parent's POSIX locks and could read stale
 * snapshots of the catalog).
 */
static int open_vaults(struct fs *fs, const struct options *o)
{
	struct snap *s = NULL;
	int r;

	r = ferry_vault_open(fs->vault_dir, 1, &fs->vault);
	if (r < 0)
		return log_error_errno(r, "cannot open vault %s%s", o->vault,
				       r == -ENOENT ? " (no catalog.db: not a vault?)" : "");
	if (!o->readonly) {
		r = open_writer(fs, fs->vault_dir);
		if (r < 0)
			return log_error_errno(r, "cannot open vault %s for writing clones",
					       o->vault);
	}
	if (fs->dcache) {
		ferry_store_set_disk_cache(ferry_vault_store(fs->vault), fs->dcache);
		if (fs->wvault)
			ferry_store_set_disk_cache(ferry_vault_store(fs->wvault), fs->dcache);
	}
	r = ferry_chunk_cache_new(fs->vault, (size_t)o->cache_mib << 20, &fs->cache);
	if (r < 0)
		return log_error_errno(r, "cannot allocate the chunk cache");
	r = ferry_chunk_cache_set_prefetch(fs->cache, (int)o->readahead, (int)o->readahead_threads);
	if (r < 0)
		return log_error_errno(r, "cannot set up read-ahead");
	/* Read the catalog once now, so a damaged one fails the mount with a
	 * message instead of failing every request later. */
	r = snap_get(fs, &s);
	if (r < 0)
		return log_error_errno(r, "cannot read the catalog of vault %s", o->vault);
	snap_unref(s);
	if (ferry_catalog_get_setting(ferry_vault_catalog(fs->vault), "vault_id", fs->vault_id,
				      sizeof(fs->vault_id)) < 0)
		snprintf(fs->vault_id, sizeof(fs->vault_id), "%s", fs->vault_dir);

	return 0;
}

static void close_vaults(struct fs *fs)
{
	pthread_mutex_lock(&snap_lock);
	if (fs->snap && --fs->snap->refs == 0)
		snap_free(fs->snap);
	fs->snap = NULL;
	pthread_mutex_unlock(&snap_lock);
	fs->cache = ferry_chunk_cache_free(fs->cache);
	fs->wvault = ferry_vault_free(fs->wvault);
	fs->vault = ferry_vault_free(fs->vault);
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
	if (fs->read_ahead_kb > 0) {
		r = mount_bdi(mnt, fs->bdi, sizeof(fs->bdi));
		if (r < 0)
			log_debug_errno(r, "cannot find the device of %s in /proc/self/mountinfo",
					mnt);
	}
	if (!o->foreground) {
		close_vaults(fs);
		if (fuse_daemonize(0) < 0)
			return log_error_errno(-EIO, "cannot detach");
		r = open_vaults(fs, o);
		if (r < 0)
			return r;
	}

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

/*
 * The on-disk cache for a vault whose store is remote: --disk-cache DIR, or
 * by default a directory per vault under the user's cache directory (XDG).
 * A cache is only an optimisation: where the default one cannot be had
 * (no HOME, another ferryfs holds it) the mount goes on without; one asked
 * for by name must open.
 */
static int open_disk_cache(struct fs *fs, const struct options *o)
{
	struct ferry_store *store = ferry_vault_store(fs->vault);
	_cleanup_free_ char *dflt = NULL;
	const char *dir = o->disk_cache, *xdg, *home;
	int r;

	if (ferry_blobs_local_dir(ferry_store_blobs(store))) {
		if (o->disk_cache)
			log_info("vault %s: the store is local, --disk-cache is not used",
				 o->vault);
		return 0;
	}
	if (o->disk_cache_mib == 0)
		return 0;
	if (!dir) {
		xdg = getenv("XDG_CACHE_HOME");
		home = getenv("HOME");
		if (!ferry_name_valid(fs->vault_id)) {
			log_info(
				"vault %s has no usable vault id: no disk cache (see --disk-cache)",
				o->vault);
			return 0;
		}
		/* The XDG spec: a relative XDG_CACHE_HOME is to be ignored. */
		if (xdg && xdg[0] == '/')
			r = asprintf(&dflt, "%s/ferryfs/%s", xdg, fs->vault_id);
		else if (home && home[0] == '/')
			r = asprintf(&dflt, "%s/.cache/ferryfs/%s", home, fs->vault_id);
		else {
			log_info("neither XDG_CACHE_HOME nor HOME is set: no disk cache "
				 "(see --disk-cache)");
			return 0;
		}
		if (r < 0)
			return log_error_errno(-ENOMEM, "out of memory");
		dir = dflt;
	}
	r = ferry_diskcache_open(dir, (uint64_t)o->disk_cache_mib << 20, &fs->dcache);
	if (r < 0) {
		const char *why = r == -EBUSY ? " (another ferryfs is using it)" : "";

		if (o->disk_cache)
			return log_error_errno(r, "cannot open the disk cache %s%s", dir, why);
		log_warning_errno(r, "cannot open the disk cache %s%s; going on without one", dir,
				  why);
		return 0;
	}
	ferry_store_set_disk_cache(store, fs->dcache);
	if (fs->wvault)
		ferry_store_set_disk_cache(ferry_vault_store(fs->wvault), fs->dcache);
	log_debug("disk cache %s, up to %lu MiB", dir, o->disk_cache_mib);
	return 0;
}

static int run(const struct options *o)
{
	_cleanup_free_ char *vault_dir = NULL, *mnt = NULL;
	_cleanup_(fs_done) struct fs fs = {
		.uid = getuid(),
		.gid = getgid(),
		.mounted_ns = ferry_now_ns(),
		.reg_lock = PTHREAD_MUTEX_INITIALIZER,
		.ra_lock = PTHREAD_MUTEX_INITIALIZER,
		.bg_lock = PTHREAD_MUTEX_INITIALIZER,
		.bg_cond = PTHREAD_COND_INITIALIZER,
	};
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

	fs.mnt = strdup(mnt);
	if (!fs.mnt)
		return log_error_errno(-ENOMEM, "out of memory");
	fs.vault_dir = vault_dir;
	/* Only reads through the page cache are read ahead by the kernel. */
	fs.read_ahead_kb = o->page_cache ? o->read_ahead_kb : 0;
	fs.page_cache = o->page_cache;
	r = open_vaults(&fs, o);
	if (r < 0)
		return r;
	r = open_disk_cache(&fs, o);
	if (r < 0)
		return r;
	return serve(&fs, o, mnt);
}

/* Backoff between object-store retries: policy, so it lives in the program. */
static void blobs_sleep(uint64_t ns)
{
	struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000u),
			       .tv_nsec = (long)(ns % 1000000000u) };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static const char *blobs_getenv(const char *name)
{
	return getenv(name);
}

int main(int argc, char *argv[])
{
	struct options o = {
		.cache_mib = CACHE_MIB_DEFAULT,
		.threads = THREADS_DEFAULT,
		.disk_cache_mib = DISK_CACHE_MIB_DEFAULT,
		.read_ahead_kb = READ_AHEAD_KB_DEFAULT,
		.readahead = -1,
		.readahead_threads = -1,
	};
	struct ferry_blobs_options bo;
	int r;

	log_set_program("ferryfs");
	/* A vault whose store is remote reads packs with the credentials
	 * the Azure and AWS tools use (AZURE_STORAGE_*, AWS_*). */
	r = ferry_blobs_options_from(blobs_getenv, &bo);
	if (r >= 0) {
		bo.sleep = blobs_sleep;
		r = ferry_blobs_set_options(&bo);
	}
	if (r < 0) {
		log_error_errno(r, "cannot set up object-store options");
		return 1;
	}
	r = parse_argv(argc, argv, &o);
	if (r <= 0) {
		free(o.fuse_opts);
		free(o.disk_cache);
		return r < 0 ? 1 : 0;
	}
	if (pthread_key_create(&readbuf_key, readbuf_free) != 0) {
		log_error("out of memory");
		return 1;
	}
	r = run(&o);
	free(o.fuse_opts);
	free(o.disk_cache);
	return r < 0 ? 1 : 0;
}
