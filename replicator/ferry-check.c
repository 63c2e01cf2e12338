/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * ferry check and ferry gc: verifying a vault (packs, index, every root
 * that keeps data alive: maint_roots) and collecting its garbage.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "ferry/catalog.h"
#include "ferry/log.h"
#include "ferry/map.h"
#include "ferry/store.h"
#include "maint.h"

/* ---- check ---- */

struct check_ctx {
	struct ferry_vault *v;
	int read_data;
	unsigned problems;
	uint64_t packs, objects, nodes, extents, roots;
	const char *what; /* the map being walked, for messages */
	uint64_t *known_packs;
	size_t nknown;
};

static int problem(struct check_ctx *k, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int problem(struct check_ctx *k, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char msg[1024];
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	printf("DAMAGE: %s\n", msg);
	k->problems++;
	return 0;
}

static int count_index_entry(const struct ferry_id *id, const struct ferry_loc *loc, void *userdata)
{
	struct check_ctx *k = userdata;
	k->objects++;
	return 0;
}

static int check_pack(uint64_t pack, uint64_t size, uint32_t count, void *userdata)
{
	struct check_ctx *k = userdata;
	uint64_t before = k->objects;
	k->packs++;
	uint64_t *n = realloc(k->known_packs, (k->nknown + 1) * sizeof(*n));
	if (!n)
		return -ENOMEM;
	k->known_packs = n;
	k->known_packs[k->nknown++] = pack;
	int r = ferry_store_pack_index(ferry_vault_store(k->v), pack, k->read_data,
				       count_index_entry, k);
	if (r < 0)
		return problem(k, "pack %016llx: %s", (unsigned long long)pack,
			       r == -EBADMSG ? "damaged (checksum, truncation or bad object)" :
					       strerror(-r));
	if (k->objects - before != count)
		return problem(k, "pack %016llx holds %llu objects, the catalog expects %u",
			       (unsigned long long)pack, (unsigned long long)(k->objects - before),
			       count);
	return 0;
}

static int check_node(const struct ferry_id *id, void *userdata)
{
	struct check_ctx *k = userdata;
	k->nodes++;
	return 0;
}

static int check_extent(const struct ferry_extent *e, void *userdata)
{
	struct check_ctx *k = userdata;
	struct ferry_loc loc;
	k->extents++;
	int r = ferry_catalog_object_get(ferry_vault_catalog(k->v), &e->chunk, &loc);
	char hex[FERRY_ID_HEX_SIZE];
	if (r == -ENOENT)
		return problem(k, "%s: chunk %s at block %llu is missing from the store", k->what,
			       ferry_id_to_hex(&e->chunk, hex), (unsigned long long)e->block);
	if (r < 0)
		return r;
	if (loc.type != FERRY_OBJ_CHUNK ||
	    ((uint64_t)e->chunk_block + e->count) * FERRY_BLOCK_SIZE > loc.plen)
		return problem(k, "%s: blocks %llu+%llu point outside chunk %s", k->what,
			       (unsigned long long)e->block, (unsigned long long)e->count,
			       ferry_id_to_hex(&e->chunk, hex));
	return 0;
}

static int check_root(const char *what, const struct ferry_id *root, uint64_t size, void *userdata)
{
	struct check_ctx *k = userdata;
	k->roots++;
	k->what = what;
	int r = ferry_map_walk(ferry_vault_objsrc(k->v), root, DIV_ROUND_UP(size, FERRY_BLOCK_SIZE),
			       check_node, check_extent, k);
	if (r < 0 && r != -ENOMEM)
		return problem(k, "%s: map unreadable (%s)", what, strerror(-r));
	return r;
}

static int check_record(const char *what, const struct ferry_id *id, void *userdata)
{
	struct check_ctx *k = userdata;
	_cleanup_free_ void *buf = NULL;
	size_t len;
	struct ferry_loc loc;
	char hex[FERRY_ID_HEX_SIZE];
	int r = k->read_data ? ferry_vault_read_object(k->v, id, &buf, &len) :
			       ferry_catalog_object_get(ferry_vault_catalog(k->v), id, &loc);
	if (r == -ENOMEM)
		return r;
	if (r < 0)
		return problem(k, "%s %s: %s", what, ferry_id_to_hex(id, hex),
			       r == -ENOENT ? "missing from the store" : strerror(-r));
	return 0;
}

static const struct maint_roots_ops check_ops = { check_root, check_record };

static int check_object_pack(const struct ferry_id *id, const struct ferry_loc *loc, void *userdata)
{
	struct check_ctx *k = userdata;
	for (size_t i = 0; i < k->nknown; i++)
		if (k->known_packs[i] == loc->pack)
			return 0;
	char hex[FERRY_ID_HEX_SIZE];
	return problem(k, "object %s is indexed in pack %016llx, which the catalog does not have",
		       ferry_id_to_hex(id, hex), (unsigned long long)loc->pack);
}

int cmd_check(int argc, char **argv)
{
	struct opts o = { 0 };
	if (parse_common(argc, argv, &o,
			 "Usage: ferry check --vault DIR [--read-data]\n\n"
			 "Verifies every pack (footer, index checksum), that every indexed object\n"
			 "lives in a known pack, and every map of every disk and recovery point.\n"
			 "--read-data also reads, decompresses and hashes every object.\n"
			 "Exits 1 if anything is damaged.\n") < 0)
		return 2;
	if (o.help)
		return 0;
	if (optind != argc) {
		log_error("usage: ferry check --vault DIR [--read-data]");
		return 2;
	}
	_cleanup_(ferry_vault_freep) struct ferry_vault *v = NULL;
	if (open_vault(o.vault, 1, &v) < 0)
		return 1;
	struct check_ctx k = { .v = v, .read_data = o.read_data };
	struct ferry_catalog *c = ferry_vault_catalog(v);
	/* One read transaction: a vault being written is checked as it was
	 * when the check began, so nothing committed meanwhile looks damaged. */
	int r = ferry_catalog_begin_read(c);
	if (r >= 0)
		r = ferry_catalog_pack_list(c, check_pack, &k);
	if (r >= 0 && k.nknown < 100000)
		r = ferry_catalog_object_list(c, check_object_pack, &k);
	if (r >= 0)
		r = maint_roots(v, &check_ops, &k);
	ferry_catalog_rollback(c);
	free(k.known_packs);
	if (r < 0)
		return log_error_errno(r, "check of %s could not finish", o.vault), 1;
	printf("%s: %llu packs, %llu objects%s, %llu maps, %llu map nodes, %llu extents: %s\n",
	       o.vault, (unsigned long long)k.packs, (unsigned long long)k.objects,
	       o.read_data ? " (data read and verified)" : "", (unsigned long long)k.roots,
	       (unsigned long long)k.nodes, (unsigned long long)k.extents,
	       k.problems ? "DAMAGED" : "ok");
	if (k.problems)
		printf("%u problem%s found\n", k.problems, k.problems == 1 ? "" : "s");
	return k.problems ? 1 : 0;
}

/* ---- gc ---- */

int cmd_gc(int argc, char **argv)
{
	struct opts o = { 0 };
	if (parse_common(
		    argc, argv, &o,
		    "Usage: ferry gc --vault DIR\n\n"
		    "Applies the retention policy and removes data that no recovery point,\n"
		    "live image or failover clone references. Needs the vault's writer lock,\n"
		    "which a running replicator holds only during its passes (it collects\n"
		    "garbage itself as it runs); ferryfs may keep writing clones meanwhile.\n") < 0)
		return 2;
	if (o.help)
		return 0;
	if (!o.vault || optind != argc) {
		log_error("usage: ferry gc --vault DIR");
		return 2;
	}
	_cleanup_close_ int lock = -1;
	int r = maint_lock(o.vault, "writer", &lock);
	if (r == -EBUSY)
		return log_error("vault %s is in use by a replicator", o.vault), 1;
	if (r < 0)
		return log_error_errno(r, "cannot lock vault %s", o.vault), 1;
	_cleanup_(ferry_vault_freep) struct ferry_vault *v = NULL;
	if (open_vault(o.vault, 0, &v) < 0)
		return 1;
	unsigned thinned = 0;
	struct gc_result g;
	r = maint_thin(v, ferry_now_ns(), &thinned);
	if (r >= 0)
		r = maint_gc(v, &g);
	if (r < 0)
		return log_error_errno(r, "garbage collection of %s failed", o.vault), 1;
	char freed[32];
	format_bytes(g.bytes_freed, freed, sizeof(freed));
	printf("%u point(s) thinned; %llu live objects; %llu pack(s) deleted, %llu rewritten, "
	       "%llu left for the next run (in use since GC looked), %llu orphan(s) removed; %s "
	       "freed\n",
	       thinned, (unsigned long long)g.live_objects, (unsigned long long)g.packs_deleted,
	       (unsigned long long)g.packs_rewritten, (unsigned long long)g.packs_skipped,
	       (unsigned long long)g.orphan_packs, freed);
	return 0;
}
