/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A vault directory: catalog.db, the default store (store/), the embedded
 * cache (cache/) and the agents' configuration (agents/). Opening one reads
 * its settings and opens the store they name; the read path resolves ids
 * through the catalog under the vault lock and reads outside it, so many
 * ferryfs threads decompress in parallel.
 */
#include "ferry/vault.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ferry/util.h"

struct ferry_vault {
	char *dir;
	uint32_t chunk_size;
	struct ferry_catalog *catalog;
	struct ferry_store *store;
	pthread_mutex_t lock;
	struct ferry_objsrc objsrc;
};

static int dir_is_empty_or_absent(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return errno == ENOENT ? 1 : -errno;
	struct dirent *de;
	int empty = 1;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
			empty = 0;
			break;
		}
	closedir(d);
	return empty;
}

static int join(const char *dir, const char *name, char **ret)
{
	return asprintf(ret, "%s/%s", dir, name) < 0 ? -ENOMEM : 0;
}

int ferry_vault_create(const char *dir, uint32_t chunk_size, const char *store_url)
{
	if (chunk_size < FERRY_CHUNK_SIZE_MIN || chunk_size > FERRY_CHUNK_SIZE_MAX ||
	    (chunk_size & (chunk_size - 1)))
		return -EINVAL;
	int r = dir_is_empty_or_absent(dir);
	if (r < 0)
		return r;
	if (r == 0)
		return -ENOTEMPTY;
	r = ferry_mkdir_p(dir, FERRY_DIR_MODE);
	if (r < 0)
		return r;

	_cleanup_free_ char *store_dir = NULL, *cache_dir = NULL, *agents = NULL, *db = NULL;
	if (join(dir, "store", &store_dir) < 0 || join(dir, "cache", &cache_dir) < 0 ||
	    join(dir, "agents", &agents) < 0 || join(dir, "catalog.db", &db) < 0)
		return -ENOMEM;
	struct ferry_store *s;
	r = ferry_store_open(store_url ?: store_dir, 1, &s);
	if (r < 0)
		return r;
	ferry_store_free(s);
	r = ferry_mkdir_p(cache_dir, FERRY_DIR_MODE);
	if (r >= 0)
		r = ferry_mkdir_p(agents, FERRY_DIR_MODE);
	if (r < 0)
		return r;
	/* The catalog comes last: its presence marks a finished vault. */
	/* The default store is recorded relative to the vault, so a vault
	 * directory can be moved or copied as a whole. */
	return ferry_catalog_create(db, chunk_size, store_url ?: "store");
}

struct ferry_vault *ferry_vault_free(struct ferry_vault *v)
{
	if (!v)
		return NULL;
	ferry_catalog_free(v->catalog);
	ferry_store_free(v->store);
	pthread_mutex_destroy(&v->lock);
	free(v->dir);
	free(v);
	return NULL;
}
DEFINE_TRIVIAL_CLEANUP_FUNC(struct ferry_vault *, ferry_vault_free)

static int objsrc_get(void *userdata, const struct ferry_id *id, void **ret_buf, size_t *ret_len)
{
	return ferry_vault_read_object(userdata, id, ret_buf, ret_len);
}

static int objsrc_put(void *userdata, const struct ferry_id *id, const void *buf, size_t len)
{
	return -EROFS;
}

int ferry_vault_open(const char *dir, int readonly, struct ferry_vault **ret)
{
	_cleanup_(ferry_vault_freep) struct ferry_vault *v = calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	pthread_mutex_init(&v->lock, NULL);
	v->dir = strdup(dir);
	if (!v->dir)
		return -ENOMEM;

	_cleanup_free_ char *db = NULL;
	if (join(dir, "catalog.db", &db) < 0)
		return -ENOMEM;
	int r = ferry_catalog_open(db, readonly, &v->catalog);
	if (r < 0)
		return r;
	/* Older vaults were 0750 and held files of the umask's mode: tighten
	 * the root, best effort (not ours to change, read-only media). */
	(void)ferry_mkdir_p(dir, FERRY_DIR_MODE);

	char buf[FERRY_URL_MAX];
	r = ferry_catalog_get_setting(v->catalog, "chunk_size", buf, sizeof(buf));
	if (r < 0)
		return r == -ENOENT ? -EBADMSG : r;
	uint64_t cs;
	if (ferry_parse_u64(buf, strlen(buf), FERRY_CHUNK_SIZE_MAX, &cs) < 0 ||
	    cs < FERRY_CHUNK_SIZE_MIN || (cs & (cs - 1)))
		return -EBADMSG;
	v->chunk_size = (uint32_t)cs;

	r = ferry_catalog_get_setting(v->catalog, "store_url", buf, sizeof(buf));
	if (r < 0)
		return r == -ENOENT ? -EBADMSG : r;
	_cleanup_free_ char *store_url = NULL;
	if (buf[0] == '/' || strstr(buf, "://"))
		store_url = strdup(buf);
	else if (join(dir, buf, &store_url) < 0)
		store_url = NULL;
	if (!store_url)
		return -ENOMEM;
	r = ferry_store_open(store_url, 0, &v->store);
	if (r < 0)
		return r;

	v->objsrc = (struct ferry_objsrc){ objsrc_get, objsrc_put, v };
	*ret = TAKE_PTR(v);
	return 0;
}

const char *ferry_vault_dir(const struct ferry_vault *v)
{
	return v->dir;
}
uint32_t ferry_vault_chunk_size(const struct ferry_vault *v)
{
	return v->chunk_size;
}
struct ferry_catalog *ferry_vault_catalog(struct ferry_vault *v)
{
	return v->catalog;
}
struct ferry_store *ferry_vault_store(struct ferry_vault *v)
{
	return v->store;
}
void ferry_vault_lock(struct ferry_vault *v)
{
	pthread_mutex_lock(&v->lock);
}
void ferry_vault_unlock(struct ferry_vault *v)
{
	pthread_mutex_unlock(&v->lock);
}
const struct ferry_objsrc *ferry_vault_objsrc(struct ferry_vault *v)
{
	return &v->objsrc;
}

static int read_object_once(struct ferry_vault *v, const struct ferry_id *id, void **ret_buf,
			    size_t *ret_len)
{
	struct ferry_loc loc;
	ferry_vault_lock(v);
	int r = ferry_catalog_object_get(v->catalog, id, &loc);
	ferry_vault_unlock(v);
	if (r < 0)
		return r == -ENOENT ? -ENODATA : r;
	if (loc.plen > FERRY_OBJ_MAX)
		return -EBADMSG;

	/* One spare byte keeps malloc(0) out of the picture for empty objects. */
	_cleanup_free_ void *buf = malloc(loc.plen + 1);
	if (!buf)
		return -ENOMEM;
	r = ferry_store_read(v->store, &loc, id, buf, loc.plen);
	if (r < 0)
		return r;
	*ret_buf = TAKE_PTR(buf);
	*ret_len = loc.plen;
	return 0;
}

int ferry_vault_read_object(struct ferry_vault *v, const struct ferry_id *id, void **ret_buf,
			    size_t *ret_len)
{
	/* A pack that vanished between the look-up and the read was rewritten
	 * by GC after the object was copied and the index repointed: the
	 * second look-up finds the copy. (A catalog that no longer knows the
	 * id answers -ENODATA, so only a vanished pack is retried.) */
	int r = read_object_once(v, id, ret_buf, ret_len);
	if (r == -ENOENT)
		r = read_object_once(v, id, ret_buf, ret_len);
	return r == -ENODATA ? -ENOENT : r;
}
