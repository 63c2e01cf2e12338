/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzz target for segment apply (replicator/lib/apply.c): records into
 * disk maps, chunks, points and one catalog transaction. The input is a
 * segment (its trailer recomputed, so that mutations reach the records);
 * one that parses is applied to a fresh vault whose VM has exactly the
 * disks the segment names, at the place in the chain the segment claims.
 * Refusals are fine if they leave the VM as it was. A segment that
 * applies must leave every block it wrote reading back as the last record
 * over it says (zeros elsewhere), one point per marker, and apply again as
 * "already applied" without changing anything.
 */
#include <errno.h>
#include <ftw.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "apply.h"
#include "ferry/catalog.h"
#include "ferry/changelog.h"
#include "ferry/crypto.h"
#include "ferry/image.h"
#include "ferry/log.h"
#include "ferry/util.h"
#include "ferry/vault.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHUNK (64u * 1024u)
/* apply.c takes at most 64 disks per VM. */
#define MAX_DISKS 64
/* Blocks checked per record: its first, its last and some between. */
#define SAMPLES 8

DEFINE_TRIVIAL_CLEANUP_FUNC(struct ferry_segment *, ferry_segment_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct ferry_vault *, ferry_vault_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct ferry_chunk_cache *, ferry_chunk_cache_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct ferry_image *, ferry_image_free);

/* One write of the segment, in order: blocks [start, start + n) of a disk
 * take data (NULL: zeros). */
struct op {
	uint16_t disk;
	uint64_t start, n;
	const uint8_t *data;
};

struct model {
	struct op *ops;
	size_t nops;
	uint8_t **bufs; /* unpacked DATAZ records, freed at the end */
	size_t nbufs;
	const char *names[MAX_DISKS];
	unsigned ndisks; /* highest declared index + 1 */
	unsigned markers;
};

static void model_done(struct model *m)
{
	for (size_t i = 0; i < m->nbufs; i++)
		free(m->bufs[i]);
	free(m->bufs);
	free(m->ops);
}

static int model_add(struct model *m, const struct ferry_record *r, const uint8_t *data)
{
	struct op *o = realloc(m->ops, (m->nops + 1) * sizeof(*o));
	if (!o)
		return -ENOMEM;
	m->ops = o;
	m->ops[m->nops++] = (struct op){ r->disk, r->offset / FERRY_BLOCK_SIZE,
					 r->length / FERRY_BLOCK_SIZE, data };
	return 0;
}

/* What a segment that applies must have written; -EINVAL for one this
 * harness cannot set a VM up for (a disk index beyond apply's limit). */
static int model_build(const struct ferry_segment *s, struct model *m)
{
	const struct ferry_segment_info *info = ferry_segment_info(s);
	for (uint32_t i = 0; i < info->nrecords; i++) {
		struct ferry_record r;
		if (ferry_segment_record(s, i, &r) < 0)
			abort(); /* the parser vouched for every record */
		int k = 0;
		switch (r.type) {
		case FERRY_REC_DISK:
			if (r.disk >= MAX_DISKS)
				return -EINVAL;
			m->names[r.disk] = r.name;
			m->ndisks = MAX(m->ndisks, (unsigned)r.disk + 1);
			break;
		case FERRY_REC_DATA:
			k = model_add(m, &r, r.data);
			break;
		case FERRY_REC_DATAZ: {
			uint8_t *buf = malloc(r.length);
			uint8_t **v = realloc(m->bufs, (m->nbufs + 1) * sizeof(*v));
			if (!buf || !v) {
				free(buf);
				return -ENOMEM;
			}
			m->bufs = v;
			m->bufs[m->nbufs++] = buf;
			/* One that does not unpack makes the apply refuse: the
			 * model never gets checked then. */
			if (ferry_record_unpack(&r, buf) < 0)
				memset(buf, 0, r.length);
			k = model_add(m, &r, buf);
			break;
		}
		case FERRY_REC_ZERO:
		case FERRY_REC_TRIM:
			k = model_add(m, &r, NULL);
			break;
		case FERRY_REC_MARKER:
			m->markers++;
			break;
		}
		if (k < 0)
			return k;
	}
	return m->ndisks ? 0 : -EINVAL;
}

/* The block as the model says it must read: the last op over it. */
static const uint8_t *model_block(const struct model *m, uint16_t disk, uint64_t block)
{
	static const uint8_t zeros[FERRY_BLOCK_SIZE];
	for (size_t i = m->nops; i-- > 0;) {
		const struct op *o = &m->ops[i];
		if (o->disk == disk && block >= o->start && block - o->start < o->n)
			return o->data ? o->data + (block - o->start) * FERRY_BLOCK_SIZE : zeros;
	}
	return zeros;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (flag == FTW_DP)
		rmdir(path);
	else
		unlink(path);
	return 0;
}

/* A vault with VM info->vm at the place in its chain the segment claims,
 * and disks 0..ndisks-1 named as declared ("unused-N" for a gap). */
static int setup(const char *dir, const struct ferry_segment_info *info, const struct model *m,
		 struct ferry_vault **ret)
{
	int r = ferry_vault_create(dir, CHUNK, NULL);
	struct ferry_vault *v = NULL;
	if (r >= 0)
		r = ferry_vault_open(dir, 0, &v);
	if (r < 0)
		return r;
	struct ferry_catalog *c = ferry_vault_catalog(v);
	struct ferry_vm vm = { .state = FERRY_VM_INITIAL, .retention_s = 86400, .created_ns = 1 };
	snprintf(vm.name, sizeof(vm.name), "%s", info->vm);
	snprintf(vm.cache_url, sizeof(vm.cache_url), "%s/cache", dir);
	r = ferry_catalog_begin(c);
	if (r >= 0)
		r = ferry_catalog_vm_add(c, &vm);
	vm.applied_seq = info->seq - 1;
	vm.applied_digest = info->prev;
	if (r >= 0)
		r = ferry_catalog_vm_update(c, &vm);
	for (unsigned i = 0; r >= 0 && i < m->ndisks; i++) {
		struct ferry_disk d = { .vm_id = vm.id, .idx = (uint16_t)i };
		if (m->names[i])
			snprintf(d.name, sizeof(d.name), "%s", m->names[i]);
		else
			snprintf(d.name, sizeof(d.name), "unused-%u", i);
		r = ferry_catalog_disk_add(c, &d);
	}
	if (r >= 0)
		r = ferry_catalog_commit(c);
	else
		ferry_catalog_rollback(c);
	if (r < 0) {
		ferry_vault_free(v);
		return r;
	}
	*ret = v;
	return 0;
}

struct disks {
	struct ferry_disk d[MAX_DISKS];
	unsigned n;
};

static int note_disk(const struct ferry_disk *d, void *userdata)
{
	struct disks *ds = userdata;
	if (ds->n == MAX_DISKS)
		abort();
	ds->d[ds->n++] = *d;
	return 0;
}

static unsigned npoints;
static int count_point(const struct ferry_point *p, void *userdata)
{
	npoints++;
	return 0;
}

static void check_block(struct ferry_image *img, const struct model *m, uint16_t disk,
			uint64_t size, uint64_t block)
{
	uint64_t off = block * FERRY_BLOCK_SIZE;
	if (off >= size)
		return;
	uint8_t got[FERRY_BLOCK_SIZE];
	size_t len = (size_t)MIN((uint64_t)FERRY_BLOCK_SIZE, size - off);
	if (ferry_image_read(img, got, len, off) != (ssize_t)len ||
	    memcmp(got, model_block(m, disk, block), len) != 0)
		abort();
}

/* Every sampled block of every op reads back as the model says. */
static void check_images(struct ferry_vault *v, const struct disks *ds, const struct model *m)
{
	_cleanup_(ferry_chunk_cache_freep) struct ferry_chunk_cache *cc = NULL;
	if (ferry_chunk_cache_new(v, 8u << 20, &cc) < 0)
		abort();
	for (unsigned d = 0; d < ds->n; d++) {
		if (!ds->d[d].size)
			continue;
		_cleanup_(ferry_image_freep) struct ferry_image *img = NULL;
		if (ferry_image_open(cc, &ds->d[d].work_root, ds->d[d].size, &img) < 0)
			abort();
		check_block(img, m, (uint16_t)d, ds->d[d].size, 0);
		for (size_t i = 0; i < m->nops; i++) {
			const struct op *o = &m->ops[i];
			if (o->disk != d)
				continue;
			for (uint64_t k = 0; k < SAMPLES && k < o->n; k++)
				check_block(img, m, o->disk, ds->d[d].size,
					    o->start + k * (o->n - 1) / MAX(SAMPLES - 1, 1));
			check_block(img, m, o->disk, ds->d[d].size, o->start + o->n);
		}
	}
}

static void one(const char *dir, const uint8_t *data, size_t size)
{
	_cleanup_(ferry_segment_freep) struct ferry_segment *s = NULL;
	if (ferry_segment_parse(data, size, &s) < 0)
		return;
	const struct ferry_segment_info *info = ferry_segment_info(s);
	struct model m = { 0 };
	if (model_build(s, &m) < 0) {
		model_done(&m);
		return;
	}

	/* A declared name may clash with a gap's stand-in: nothing to try. */
	_cleanup_(ferry_vault_freep) struct ferry_vault *v = NULL;
	if (setup(dir, info, &m, &v) < 0) {
		model_done(&m);
		return;
	}
	struct ferry_catalog *c = ferry_vault_catalog(v);
	struct ferry_vm before, after;
	if (ferry_catalog_vm_get(c, info->vm, &before) < 0)
		abort();

	struct apply_result res;
	char msg[512] = "";
	int r = apply_segment(v, info->vm, info->seq, data, size, &res, msg, sizeof(msg));
	if (ferry_catalog_vm_get(c, info->vm, &after) < 0)
		abort();
	if (r < 0) {
		/* Refused: with a reason, and nothing moved. */
		if (r == -ENOMEM)
			goto out;
		if (!msg[0] || after.applied_seq != before.applied_seq)
			abort();
		goto out;
	}
	if (after.applied_seq != info->seq || !ferry_id_equal(&after.applied_digest, &info->digest))
		abort();
	npoints = 0;
	if (ferry_catalog_point_list(c, after.id, count_point, NULL) < 0 || npoints != m.markers ||
	    res.points != m.markers || res.markers != m.markers)
		abort();
	struct disks ds = { .n = 0 };
	if (ferry_catalog_disk_list(c, after.id, note_disk, &ds) < 0)
		abort();
	check_images(v, &ds, &m);

	/* Again: already applied, nothing changes. */
	struct apply_result again;
	if (apply_segment(v, info->vm, info->seq, data, size, &again, msg, sizeof(msg)) < 0 ||
	    !again.already_applied)
		abort();
	struct ferry_vm last;
	if (ferry_catalog_vm_get(c, info->vm, &last) < 0 || last.applied_seq != after.applied_seq)
		abort();
out:
	model_done(&m);
}

static char base[64];

static void remove_base(void)
{
	nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static unsigned n;
	/* Refusals are logged; thousands a second would drown the fuzzer. */
	log_set_max_level(-1);
	if (!base[0]) {
		const char *tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
		snprintf(base, sizeof(base), "%s/fuzz-apply-XXXXXX", tmp);
		if (!mkdtemp(base))
			abort();
		atexit(remove_base);
	}
	if (size < 40)
		return 0;
	_cleanup_free_ uint8_t *fixed = malloc(size);
	if (!fixed)
		return 0;
	memcpy(fixed, data, size - 40);
	struct ferry_id d;
	ferry_sha256(fixed, size - 40, &d);
	memcpy(fixed + size - 40, d.b, 32);
	memcpy(fixed + size - 8, "FERRYEND", 8);

	char dir[96];
	snprintf(dir, sizeof(dir), "%s/v%u", base, n++);
	one(dir, fixed, size);
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	return 0;
}
