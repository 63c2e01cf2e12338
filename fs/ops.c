/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The FUSE operations (ops.h): the request handlers and the ops table, the
 * per-open handles, reads answered straight from the chunk cache or through
 * a per-thread buffer, and the one-time setting of the mount's read-ahead by
 * the first request. What the files are comes from the namespace (ns.h);
 * clones from the registry (registry.h).
 */
#include "ops.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "clone.h"
#include "ferry/image.h"
#include "ferry/log.h"
#include "ferry/util.h"
#include "fs.h"
#include "ns.h"
#include "registry.h"
#include "snapshot.h"

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
		registry_close(h->fs->reg, h->clone);
	free(h->text);
	free(h);
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
	if (fs->wvault && registry_start(fs->reg) < 0)
		log_error("cannot start the clone flusher: clones are flushed on "
			  "fsync and close only");
}

/* Unmount: whatever the clones still hold goes into the vault. */
static void op_destroy(void *userdata)
{
	struct fs *fs = userdata;

	registry_stop(fs->reg);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = req_fs(req);
	_cleanup_snap_ struct snap *s = NULL;
	struct fuse_entry_param e = {};
	struct node p, n;
	double timeout;
	int r;

	r = snap_get(fs->vault, &fs->snap, &s);
	if (r >= 0)
		r = ns_resolve(s, parent, &p);
	if (r >= 0)
		r = ns_lookup(s, &p, name, &n);
	if (r >= 0)
		r = ns_stat(fs, &n, &e.attr, &timeout);
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

	r = snap_get(fs->vault, &fs->snap, &s);
	if (r >= 0)
		r = ns_resolve(s, ino, &n);
	if (r >= 0)
		r = ns_stat(fs, &n, &st, &timeout);
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

	r = snap_get(fs->vault, &fs->snap, &s);
	if (r >= 0)
		r = ns_resolve(s, ino, &n);
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

	r = snap_get(fs->vault, &fs->snap, &s);
	if (r >= 0)
		r = ns_resolve(s, ino, &n);
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
	r = ns_list(req, s, &n, d);
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

	r = snap_get(fs->vault, &fs->snap, &s);
	if (r >= 0)
		r = ns_resolve(s, ino, &n);
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
		r = ns_text(fs, &n, &h->text, &h->len);
		fi->keep_cache = 1;
		break;
	case K_CLONE:
		r = registry_open(fs->reg, n.vm, n.fo, n.cdisk, &h->clone);
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
	case K_VMCONF:
		r = ns_text(fs, &n, &h->text, &h->len);
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
	int r;

	if (ns_ino_kind(ino) != K_FAILOVER) {
		fuse_reply_err(req, 0);
		return;
	}
	r = registry_flush_failover(fs->reg, ns_ino_id(ino));
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
	int writable = ns_ino_kind(ino) == K_CLONE && fs->wvault;

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

	if (ns_ino_kind(ino) != K_CLONE || !fs->wvault) {
		fuse_reply_err(req, EROFS);
		return;
	}
	r = snap_get(fs->vault, &fs->snap, &s);
	if (r >= 0)
		r = ns_resolve(s, ino, &n);
	if (r >= 0 && (to_set & FUSE_SET_ATTR_SIZE) && (uint64_t)attr->st_size != n.cdisk->size)
		r = -EINVAL;
	if (r >= 0 && (to_set & ~(times | FUSE_SET_ATTR_SIZE)))
		r = -EPERM;
	if (r >= 0)
		r = ns_stat(fs, &n, &st, &timeout);
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

const struct fuse_lowlevel_ops ops_table = {
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

int ops_init(void)
{
	int r = pthread_key_create(&readbuf_key, readbuf_free);

	return r == 0 ? 0 : -r;
}
