/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The namespace of ferryfs (see ns.h for the tree and the inode numbers):
 * resolving inodes and names against a catalog snapshot, stat, readdir
 * listings, and the content of the text files. Everything here is computed
 * from the snapshot the caller holds; the only other state it reads is the
 * mount's settings and, for a clone's mtime, the registry of open clones.
 */
#include "ns.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ferry/changelog.h"
#include "ferry/log.h"
#include "ferry/util.h"
#include "ferry/vmdef.h"
#include "registry.h"

/* Changing things are revalidated often; recovery points never change. */
#define TIMEOUT_LIVE 1.0
#define TIMEOUT_IMMUTABLE 3600.0
/* A live image changes at every applied marker, every few seconds with
 * the qemu tracker: its size and time (the marker's) follow within a
 * tenth of a second, not a whole one. Its content needs no timeout: every
 * open reads the live root of the catalog as it is then. */
#define TIMEOUT_LIVE_IMAGE 0.1

/* A failover's name can point at another failover from one command to
 * the next (change-recovery-point, or a cleanup and a new test failover
 * of the same name, make a new one with a new inode): the kernel must ask
 * again at every lookup rather than keep the old entry for a second. */
#define TIMEOUT_RENAMED 0.0

/* The I/O size images served direct suggest to readers (st_blksize): the
 * largest FUSE request. cat and cp size their buffers by it. */
#define DIRECT_IO_SIZE (1 << 20)

static fuse_ino_t make_ino(enum node_kind k, int64_t id, uint16_t idx)
{
	if (k == K_ROOT)
		return FUSE_ROOT_ID;
	return (fuse_ino_t)k << 56 | (fuse_ino_t)id << 16 | idx;
}

enum node_kind ns_ino_kind(fuse_ino_t ino)
{
	return (enum node_kind)(ino >> 56);
}

int64_t ns_ino_id(fuse_ino_t ino)
{
	return (int64_t)((ino >> 16) & SNAP_ID_MAX);
}

static struct snap_vm *vm_by_id(struct snap *s, int64_t id)
{
	for (size_t i = 0; i < s->nvms; i++)
		if (s->vms[i].vm.id == id)
			return &s->vms[i];
	return NULL;
}

static struct snap_vm *vm_by_name(struct snap *s, const char *name)
{
	for (size_t i = 0; i < s->nvms; i++)
		if (strcmp(s->vms[i].vm.name, name) == 0)
			return &s->vms[i];
	return NULL;
}

static const struct ferry_disk *disk_by_idx(const struct snap_vm *v, unsigned idx)
{
	for (size_t i = 0; i < v->ndisks; i++)
		if (v->disks[i].idx == idx)
			return &v->disks[i];
	return NULL;
}

static const struct ferry_point_disk *pdisk_by_idx(const struct snap_point *p, unsigned idx)
{
	for (size_t i = 0; i < p->ndisks; i++)
		if (p->disks[i].idx == idx)
			return &p->disks[i];
	return NULL;
}

static const struct ferry_clone_disk *cdisk_by_idx(const struct snap_failover *f, unsigned idx)
{
	for (size_t i = 0; i < f->ndisks; i++)
		if (f->disks[i].idx == idx)
			return &f->disks[i];
	return NULL;
}

int ns_resolve(struct snap *s, fuse_ino_t ino, struct node *n)
{
	enum node_kind k = ns_ino_kind(ino);
	int64_t id = ns_ino_id(ino);
	unsigned idx = ino & 0xffff;

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
		n->point = snap_point_by_id(s, id, &n->vm);
		if (!n->point)
			return -ENOENT;
		if (k != K_PIMAGE)
			return idx == 0 ? 0 : -ENOENT;
		n->pdisk = pdisk_by_idx(n->point, idx);
		return n->pdisk ? 0 : -ENOENT;
	case K_FAILOVER:
	case K_CLONE:
	case K_DOMXML:
	case K_QEMUARGS:
		n->fo = snap_failover_by_id(s, id, &n->vm);
		if (!n->fo)
			return -ENOENT;
		if (k != K_CLONE)
			return idx == 0 ? 0 : -ENOENT;
		n->cdisk = cdisk_by_idx(n->fo, idx);
		return n->cdisk ? 0 : -ENOENT;
	case K_ROOT:
		break;
	}
	return -ENOENT;
}

fuse_ino_t ns_ino(const struct node *n)
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
	return ns_ino(&p);
}

static const char *consistency_name(int c)
{
	return c == FERRY_CONSISTENCY_APP ? "app" : "crash";
}

/* info: what a recovery point is, as `key = value` lines. */
static int render_info(const struct snap_point *p, char **ret, size_t *ret_len)
{
	char *buf = NULL, when[64];
	size_t len = 0;
	FILE *f;

	f = open_memstream(&buf, &len);
	if (!f)
		return -ENOMEM;
	ferry_format_time(p->p.time_ns, when, sizeof(when));
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
static int render_vmdef(const struct fs *fs, const struct snap_vm *v,
			const struct snap_failover *fo, enum node_kind kind, char **ret,
			size_t *ret_len)
{
	const struct ferry_vmdef_failover f = {
		.vm = &v->vm,
		.res = v->res,
		.n_res = v->nres,
		.failover = &fo->f,
		.disks = fo->disks,
		.n_disks = fo->ndisks,
		.mount = fs->mnt,
		.vault_id = fs->vault_id,
	};
	char *text = NULL;
	int r;

	r = kind == K_DOMXML ? ferry_vmdef_failover_domain_xml(&f, &text) :
			       ferry_vmdef_failover_qemu_args(&f, &text);
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

int ns_stat(struct fs *fs, const struct node *n, struct stat *st, double *timeout)
{
	int64_t when = fs->mounted_ns;
	int r;

	*st = (struct stat){
		.st_ino = ns_ino(n),
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
		*timeout = TIMEOUT_LIVE_IMAGE;
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
		*timeout = TIMEOUT_RENAMED;
		break;
	case K_CLONE:
		st->st_mode = S_IFREG | (fs->wvault ? 0666 : 0444);
		st->st_nlink = 1;
		st->st_size = (off_t)n->cdisk->size;
		/* The clone's last flush in this process, or its failover's
		 * creation. */
		when = registry_mtime(fs->reg, n->fo->f.id, n->cdisk->idx);
		if (when <= 0)
			when = n->fo->f.created_ns;
		*timeout = TIMEOUT_RENAMED;
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
	if (!S_ISLNK(st->st_mode))
		st->st_mode &= ~fs->umask;
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

int ns_lookup(struct snap *s, const struct node *parent, const char *name, struct node *n)
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

int ns_list(fuse_req_t req, struct snap *s, const struct node *n, struct dirbuf *d)
{
	char name[FERRY_NAME_MAX + 8];
	struct node c = *n;
	int r;

	r = dirbuf_add(req, d, ".", ns_ino(n), S_IFDIR);
	if (r >= 0)
		r = dirbuf_add(req, d, "..", parent_ino(n), S_IFDIR);
	if (r < 0)
		return r;

	switch (n->kind) {
	case K_ROOT:
		c.kind = K_VM;
		for (size_t i = 0; r >= 0 && i < s->nvms; i++) {
			c.vm = &s->vms[i];
			r = dirbuf_add(req, d, c.vm->vm.name, ns_ino(&c), S_IFDIR);
		}
		return r;
	case K_VM: {
		static const struct {
			const char *name;
			enum node_kind kind;
			mode_t mode;
		} entries[] = {
			{ "vm.conf", K_VMCONF, S_IFREG },
			{ "disks", K_DISKS, S_IFDIR },
			{ "recovery-points", K_POINTS, S_IFDIR },
			{ "failovers", K_FAILOVERS, S_IFDIR },
		};
		for (size_t i = 0; r >= 0 && i < ARRAY_SIZE(entries); i++) {
			c.kind = entries[i].kind;
			r = dirbuf_add(req, d, entries[i].name, ns_ino(&c), entries[i].mode);
		}
		return r;
	}
	case K_DISKS:
		c.kind = K_LIVE;
		for (size_t i = 0; r >= 0 && i < n->vm->ndisks; i++) {
			c.disk = &n->vm->disks[i];
			snprintf(name, sizeof(name), "%s.img", c.disk->name);
			r = dirbuf_add(req, d, name, ns_ino(&c), S_IFREG);
		}
		return r;
	case K_POINTS:
		c.kind = K_POINT;
		for (size_t i = 0; r >= 0 && i < n->vm->npoints; i++) {
			c.point = &n->vm->points[i];
			r = dirbuf_add(req, d, c.point->p.name, ns_ino(&c), S_IFDIR);
		}
		if (r >= 0 && n->vm->latest) {
			c.kind = K_LATEST;
			r = dirbuf_add(req, d, "latest", ns_ino(&c), S_IFLNK);
		}
		if (r >= 0 && n->vm->latest_app) {
			c.kind = K_LATEST_APP;
			r = dirbuf_add(req, d, "latest-app-consistent", ns_ino(&c), S_IFLNK);
		}
		return r;
	case K_POINT:
		c.kind = K_PIMAGE;
		for (size_t i = 0; r >= 0 && i < n->point->ndisks; i++) {
			c.pdisk = &n->point->disks[i];
			snprintf(name, sizeof(name), "%s.img", c.pdisk->name);
			r = dirbuf_add(req, d, name, ns_ino(&c), S_IFREG);
		}
		if (r >= 0) {
			c.kind = K_PINFO;
			r = dirbuf_add(req, d, "info", ns_ino(&c), S_IFREG);
		}
		return r;
	case K_FAILOVERS:
		c.kind = K_FAILOVER;
		for (size_t i = 0; r >= 0 && i < n->vm->nfailovers; i++) {
			c.fo = &n->vm->failovers[i];
			r = dirbuf_add(req, d, c.fo->f.name, ns_ino(&c), S_IFDIR);
		}
		return r;
	case K_FAILOVER:
		c.kind = K_CLONE;
		for (size_t i = 0; r >= 0 && i < n->fo->ndisks; i++) {
			c.cdisk = &n->fo->disks[i];
			snprintf(name, sizeof(name), "%s.img", c.cdisk->name);
			r = dirbuf_add(req, d, name, ns_ino(&c), S_IFREG);
		}
		if (r >= 0) {
			c.kind = K_DOMXML;
			r = dirbuf_add(req, d, "domain.xml", ns_ino(&c), S_IFREG);
		}
		if (r >= 0) {
			c.kind = K_QEMUARGS;
			r = dirbuf_add(req, d, "qemu.args", ns_ino(&c), S_IFREG);
		}
		return r;
	default:
		return -ENOTDIR;
	}
}

int ns_text(struct fs *fs, const struct node *n, char **ret, size_t *ret_len)
{
	char *text;

	switch (n->kind) {
	case K_VMCONF:
		text = malloc(n->vm->conflen + 1);
		if (!text)
			return -ENOMEM;
		memcpy(text, n->vm->conf, n->vm->conflen);
		*ret = text;
		*ret_len = n->vm->conflen;
		return 0;
	case K_PINFO:
		return render_info(n->point, ret, ret_len);
	case K_DOMXML:
	case K_QEMUARGS:
		return render_vmdef(fs, n->vm, n->fo, n->kind, ret, ret_len);
	default:
		return -EINVAL;
	}
}
