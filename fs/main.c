/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * ferryfs: mounts a vault with the FUSE low-level API. Each VM is a
 * directory with its definition (vm.conf), its live disk images, its
 * recovery points (immutable images the kernel may cache across opens) and
 * its failovers, whose clone images are the only writable files (clone.h).
 * The view follows the replicator without a remount (snapshot.h), inode
 * numbers are computed from catalog ids (ns.h), clones open on several
 * handles share one overlay (registry.h), and the requests are served by
 * ops.c. This file holds the program: options, opening the vault and the
 * caches, mounting, detaching and the session loop.
 */
#include "fs.h"

#include <errno.h>
#include <fuse_lowlevel.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "env.h"
#include "ferry/blobs.h"
#include "ferry/catalog.h"
#include "ferry/diskcache.h"
#include "ferry/image.h"
#include "ferry/log.h"
#include "ferry/store.h"
#include "ferry/util.h"
#include "ferry/vault.h"
#include "ops.h"
#include "registry.h"
#include "snapshot.h"

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
	       "  -o OPT[,OPT...]      mount options: allow_other, uid=N, gid=N and\n"
	       "                       umask=OCTAL (every entry's owner, group and the\n"
	       "                       permissions taken off; default: the mounting\n"
	       "                       user's, 077), cache_size=MIB, threads=N,\n"
	       "                       ro (clones read-only too),\n"
	       "                       readahead=CHUNKS and readahead_threads=N\n"
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
	       "  --insecure-http      allow a store over plain http:// beyond this\n"
	       "                       machine (also -o insecure_http, FERRY_INSECURE_HTTP=1)\n"
	       "  -h, --help           show this help\n"
	       "  --version            show the version\n",
	       READ_AHEAD_KB_DEFAULT, CACHE_MIB_DEFAULT, THREADS_DEFAULT, DISK_CACHE_MIB_DEFAULT);
}

struct options {
	const char *vault;
	const char *mountpoint;
	int foreground;
	int debug;
	uint64_t cache_mib;
	uint64_t threads;
	int readonly; /* -o ro: clones read-only too */
	/* Read-ahead in chunks and its threads; -1: the chunk cache's
	 * default, which depends on where the store is. */
	long readahead, readahead_threads;
	uint64_t read_ahead_kb; /* the kernel's, on the mount; 0: its default */
	int page_cache;         /* -o page_cache */
	char *fuse_opts;        /* what remains of -o for libfuse */
	char *disk_cache;       /* --disk-cache; NULL: the default place, for a remote store */
	uint64_t disk_cache_mib;
	/* -o uid=, gid=, umask=: who the entries belong to and what their
	 * modes lose; -1 for uid and gid: the mounting user's. */
	int64_t uid, gid;
	mode_t umask;
};

/* -o uid=N and gid=N: numbers, as FUSE's own file systems take them. */
static int parse_id(const char *key, const char *v, int64_t *ret)
{
	uint64_t id;

	if (ferry_parse_u64(v, strlen(v), UINT32_MAX - 1, &id) < 0)
		return log_error_errno(-EINVAL, "invalid %s: %s (a number)", key, v);
	*ret = (int64_t)id;
	return 0;
}

static int parse_umask(const char *v, mode_t *ret)
{
	size_t n = strlen(v);
	mode_t m = 0;

	if (n == 0 || n > 4 || strspn(v, "01234567") != n)
		return log_error_errno(-EINVAL, "invalid umask: %s (octal, such as 077)", v);
	for (size_t i = 0; i < n; i++)
		m = (mode_t)(m << 3 | (mode_t)(v[i] - '0'));
	if (m > 0777)
		return log_error_errno(-EINVAL, "invalid umask: %s (at most 0777)", v);
	*ret = m;
	return 0;
}

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
			if (ferry_parse_u64(opt + 11, strlen(opt + 11), 1024 * 1024,
					    &o->cache_mib) < 0)
				return log_error_errno(-EINVAL, "invalid cache_size: %s", opt + 11);
			continue;
		}
		if (strncmp(opt, "disk_cache=", 11) == 0) {
			if (set_disk_cache(o, opt + 11) < 0)
				return -EINVAL;
			continue;
		}
		if (strncmp(opt, "disk_cache_size=", 16) == 0) {
			if (ferry_parse_u64(opt + 16, strlen(opt + 16), DISK_CACHE_MIB_MAX,
					    &o->disk_cache_mib) < 0)
				return log_error_errno(-EINVAL, "invalid disk_cache_size: %s",
						       opt + 16);
			continue;
		}
		if (strncmp(opt, "threads=", 8) == 0) {
			if (ferry_parse_u64(opt + 8, strlen(opt + 8), 1024, &o->threads) < 0 ||
			    o->threads == 0)
				return log_error_errno(-EINVAL, "invalid threads: %s", opt + 8);
			continue;
		}
		if (strncmp(opt, "readahead=", 10) == 0) {
			uint64_t v;

			if (ferry_parse_u64(opt + 10, strlen(opt + 10), 1024, &v) < 0)
				return log_error_errno(-EINVAL, "invalid readahead: %s", opt + 10);
			o->readahead = (long)v;
			continue;
		}
		if (strncmp(opt, "readahead_threads=", 18) == 0) {
			uint64_t v;

			if (ferry_parse_u64(opt + 18, strlen(opt + 18), 64, &v) < 0)
				return log_error_errno(-EINVAL, "invalid readahead_threads: %s",
						       opt + 18);
			o->readahead_threads = (long)v;
			continue;
		}
		if (strncmp(opt, "read_ahead_kb=", 14) == 0) {
			if (ferry_parse_u64(opt + 14, strlen(opt + 14), READ_AHEAD_KB_MAX,
					    &o->read_ahead_kb) < 0)
				return log_error_errno(-EINVAL, "invalid read_ahead_kb: %s",
						       opt + 14);
			continue;
		}
		if (strcmp(opt, "page_cache") == 0) {
			o->page_cache = 1;
			continue;
		}
		if (strcmp(opt, "insecure_http") == 0) {
			if (env_blobs_allow_insecure_http() < 0)
				return -ENOMEM;
			continue;
		}
		if (strncmp(opt, "uid=", 4) == 0) {
			if (parse_id("uid", opt + 4, &o->uid) < 0)
				return -EINVAL;
			continue;
		}
		if (strncmp(opt, "gid=", 4) == 0) {
			if (parse_id("gid", opt + 4, &o->gid) < 0)
				return -EINVAL;
			continue;
		}
		if (strncmp(opt, "umask=", 6) == 0) {
			if (parse_umask(opt + 6, &o->umask) < 0)
				return -EINVAL;
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
		ARG_INSECURE_HTTP,
	};
	static const struct option longopts[] = {
		{ "vault", required_argument, NULL, ARG_VAULT },
		{ "cache-size", required_argument, NULL, ARG_CACHE },
		{ "threads", required_argument, NULL, ARG_THREADS },
		{ "disk-cache", required_argument, NULL, ARG_DISK_CACHE },
		{ "disk-cache-size", required_argument, NULL, ARG_DISK_CACHE_SIZE },
		{ "insecure-http", no_argument, NULL, ARG_INSECURE_HTTP },
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
			if (ferry_parse_u64(optarg, strlen(optarg), 1024 * 1024, &o->cache_mib) < 0)
				return log_error_errno(-EINVAL, "invalid --cache-size: %s", optarg);
			break;
		case ARG_DISK_CACHE:
			if (set_disk_cache(o, optarg) < 0)
				return -EINVAL;
			break;
		case ARG_DISK_CACHE_SIZE:
			if (ferry_parse_u64(optarg, strlen(optarg), DISK_CACHE_MIB_MAX,
					    &o->disk_cache_mib) < 0)
				return log_error_errno(-EINVAL, "invalid --disk-cache-size: %s",
						       optarg);
			break;
		case ARG_THREADS:
			if (ferry_parse_u64(optarg, strlen(optarg), 1024, &o->threads) < 0 ||
			    o->threads == 0)
				return log_error_errno(-EINVAL, "invalid --threads: %s", optarg);
			break;
		case ARG_INSECURE_HTTP:
			if (env_blobs_allow_insecure_http() < 0)
				return log_error_errno(-ENOMEM, "out of memory");
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
	registry_stop(fs->reg);
	fs->reg = registry_free(fs->reg);
	free(fs->mnt);
	snap_clear(&fs->snap);
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
	r = snap_get(fs->vault, &fs->snap, &s);
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
	snap_clear(&fs->snap);
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

	/* The kernel checks every access against the modes ns_stat gives:
	 * with allow_other, the owner and umask decide who reads images and
	 * writes clones, not whoever can reach the mount. */
	if (fuse_opt_add_arg(&args, "ferryfs") < 0 || fuse_opt_add_arg(&args, "-o") < 0 ||
	    fuse_opt_add_arg(&args, "fsname=ferry,subtype=ferryfs,default_permissions") < 0 ||
	    (o->fuse_opts &&
	     (fuse_opt_add_arg(&args, "-o") < 0 || fuse_opt_add_arg(&args, o->fuse_opts) < 0)) ||
	    (o->debug && fuse_opt_add_arg(&args, "-d") < 0))
		return log_error_errno(-ENOMEM, "out of memory");

	s.se = fuse_session_new(&args, &ops_table, sizeof(ops_table), fs);
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
	fuse_loop_cfg_set_idle_threads(cfg, (unsigned)MIN(o->threads, (uint64_t)10));
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
	log_debug("disk cache %s, up to %" PRIu64 " MiB", dir, o->disk_cache_mib);
	return 0;
}

static int run(const struct options *o)
{
	_cleanup_free_ char *vault_dir = NULL, *mnt = NULL;
	_cleanup_(fs_done) struct fs fs = {
		.uid = o->uid >= 0 ? (uid_t)o->uid : getuid(),
		.gid = o->gid >= 0 ? (gid_t)o->gid : getgid(),
		.umask = o->umask,
		.mounted_ns = ferry_now_ns(),
		.ra_lock = PTHREAD_MUTEX_INITIALIZER,
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
	r = registry_new(&fs, &fs.reg);
	if (r < 0)
		return log_error_errno(r, "out of memory");
	r = open_vaults(&fs, o);
	if (r < 0)
		return r;
	r = open_disk_cache(&fs, o);
	if (r < 0)
		return r;
	return serve(&fs, o, mnt);
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
		.uid = -1,
		.gid = -1,
		.umask = 077,
	};
	int r;

	log_set_program("ferryfs");
	/* A vault whose store is remote reads packs with the credentials
	 * the Azure and AWS tools use (AZURE_STORAGE_*, AWS_*), as every
	 * program does. */
	if (env_faults_setup() < 0)
		return 2;
	r = env_blobs_setup();
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
	if (ops_init() < 0) {
		log_error("out of memory");
		return 1;
	}
	r = run(&o);
	free(o.fuse_opts);
	free(o.disk_cache);
	return r < 0 ? 1 : 0;
}
