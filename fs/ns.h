/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The namespace: which file each inode number and each name stands for in
 * a catalog snapshot, their attributes, directory listings and the content
 * of the small text files.
 *
 *	MOUNT/<vm>/vm.conf
 *	      <vm>/disks/<disk>.img                      live images
 *	      <vm>/recovery-points/<point>/<disk>.img    immutable images
 *	      <vm>/recovery-points/<point>/info
 *	      <vm>/recovery-points/latest                symlinks to points
 *	      <vm>/recovery-points/latest-app-consistent
 *	      <vm>/failovers/<name>/<disk>.img           writable clones
 *	      <vm>/failovers/<name>/domain.xml, qemu.args
 *
 * Inode numbers are computed from catalog ids: 8 bits of kind, 40 bits of
 * catalog id, 16 bits of disk index,
 *
 *	ino = kind << 56 | id << 16 | idx
 *
 * The id is the VM's catalog id for per-VM nodes, the recovery point's
 * catalog id (unique across VMs) for per-point nodes and the failover's
 * catalog id (unique across VMs too) for per-failover nodes; idx is the disk's
 * source index for images and 0 otherwise. The root is FUSE_ROOT_ID (kind
 * 0). Catalog ids are row ids that are not handed out again while the
 * catalog lives, so an inode names one object for good and needs no table
 * (and forget has nothing to count down); objects with ids beyond 40 bits
 * are not shown (SNAP_ID_MAX).
 */
#pragma once

#include <fuse_lowlevel.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "fs.h"
#include "snapshot.h"

enum node_kind {
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

/* What an inode stands for: pointers into the snapshot it was resolved in,
 * valid while that snapshot is held. Fields a kind has no use for are NULL. */
struct node {
	enum node_kind kind;
	struct snap_vm *vm;
	struct snap_point *point;             /* K_POINT and below */
	const struct ferry_disk *disk;        /* K_LIVE */
	const struct ferry_point_disk *pdisk; /* K_PIMAGE */
	struct snap_failover *fo;             /* K_FAILOVER and below */
	const struct ferry_clone_disk *cdisk; /* K_CLONE */
};

/* The kind and the catalog id an inode number carries, without a snapshot. */
enum node_kind ns_ino_kind(fuse_ino_t ino);
int64_t ns_ino_id(fuse_ino_t ino);

/* The inode number of a node. */
fuse_ino_t ns_ino(const struct node *n);

/* The node inode ino stands for in s; -ENOENT if s has no such object. */
int ns_resolve(struct snap *s, fuse_ino_t ino, struct node *n);

/* The node called name in directory parent; -ENOENT if there is none,
 * -ENOTDIR if parent is no directory. */
int ns_lookup(struct snap *s, const struct node *parent, const char *name, struct node *n);

/*
 * A node's attributes and how long the kernel may keep them: recovery
 * points never change (an hour), everything else may (a second). Images
 * claim one 512-byte block less than their size, so that copy tools ask
 * SEEK_DATA/SEEK_HOLE; sizes of text files are those of their content
 * (rendered for the purpose). -errno from rendering.
 */
int ns_stat(struct fs *fs, const struct node *n, struct stat *st, double *timeout);

/*
 * The content of a text file (K_VMCONF, K_PINFO, K_DOMXML, K_QEMUARGS) in a
 * new buffer (free() it) of *ret_len bytes, not necessarily NUL-terminated.
 * A failover whose VM definition cannot be rendered gets a one-line comment
 * saying why (and a log message). -EINVAL for other kinds, -ENOMEM.
 */
int ns_text(struct fs *fs, const struct node *n, char **ret, size_t *ret_len);

/* A directory listing in the form readdir replies with. */
struct dirbuf {
	char *buf; /* fuse_add_direntry() entries; free() it */
	size_t len;
};

/*
 * Appends the entries of directory n to d: ".", "..", then its children in
 * a fixed order (for the root, the VMs of s). -ENOTDIR if n is no
 * directory, -ENOMEM; d keeps what was added either way.
 */
int ns_list(fuse_req_t req, struct snap *s, const struct node *n, struct dirbuf *d);
