/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The FUSE low-level operations of ferryfs: each request resolves its inode
 * in the newest catalog snapshot (snapshot.h, ns.h) and replies exactly
 * once. Per-open state (an image, a clone from the registry, a rendered
 * text file or a directory listing) lives in fi->fh. Live and point images
 * are read-only and served direct unless -o page_cache; clone images are
 * the only writable files, and close and fsync make their writes durable.
 * Everything else that would change the tree fails with EROFS.
 */
#pragma once

#include <fuse_lowlevel.h>

/* The operations; the session's userdata is the mount's struct fs (fs.h). */
extern const struct fuse_lowlevel_ops ops_table;

/* Sets up what the operations keep per worker thread. Once, before the
 * session starts; -errno. */
int ops_init(void);
