/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Change-log segments: encoding on the agent side, verification and
 * decoding on the replicator side. A segment is a header, a payload of
 * records (zstd compressed when that helps) and a SHA-256 trailer that is
 * the segment's identity and the next segment's prev link. Parsing trusts
 * nothing: the digest is checked before anything else is interpreted, and
 * every record is validated before a single one is handed out, so a caller
 * sees a whole, consistent segment or -EBADMSG. Format: docs/format/segment.md.
 */
#include "ferry/changelog.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "ferry/crypto.h"
#include "ferry/util.h"

#define SEG_MAGIC "FERRYSEG"
#define SEG_END_MAGIC "FERRYEND"
/* 1.0: records raw or in a compressed payload; 2.0 adds DATAZ records
 * (format 2 is written only by writers set to chunking); 3.0 lets a MARKER
 * carry a group round in its offset (written only for a segment that holds
 * such a marker). All three are read. */
#define SEG_MAJOR 1
#define SEG_MAJOR_CHUNKED 2
#define SEG_MAJOR_GROUP 3
#define SEG_MINOR 0

/* Offsets of the fixed header fields (little-endian). */
#define H_MAGIC 0
#define H_MAJOR 8
#define H_MINOR 10
#define H_HDRLEN 12
#define H_SEQ 16
#define H_PREV 24
#define H_CREATED 56
#define H_NRECORDS 64
#define H_FLAGS 68
#define H_PLAIN 72
#define H_STORED 80
#define H_COMPRESSION 88
#define H_VMLEN 89
#define H_VM 90
#define H_FIXED 90
/* A header is never more than this: bounds what a damaged length can claim. */
#define H_MAX FERRY_SEGMENT_MAX_HEADER

#define TRAILER_SIZE (FERRY_ID_SIZE + 8)

#define COMP_NONE 0
#define COMP_ZSTD 1
/* Segments are in transit and compressed again in the store: speed first. */
#define ZSTD_LEVEL 1

/* Room for record headers around FERRY_SEGMENT_MAX_PLAIN bytes of data;
 * writer and parser share the bound, so whatever is written can be read. */
#define PLAIN_LIMIT ((uint64_t)FERRY_SEGMENT_MAX_PAYLOAD)

/* Record layout: u8 type, u16 disk, u64 offset, u64 length, then per type. */
#define R_COMMON 19
#define R_DISK_EXTRA 1 /* + name bytes */
#define R_MARKER_EXTRA 9
#define R_DATAZ_EXTRA 4 /* u32 frame length, + frame */
/* A DATAZ piece is at most one chunk, and chunks at most FERRY_OBJ_MAX. */
#define DATAZ_MAX_PLAIN (4u * 1024u * 1024u)
/* Distinct disks one segment may declare; a linear table stays cheap. */
#define MAX_DISKS 256
/* Small enough that rounding up and adding never wraps. */
#define MAX_DISK_SIZE FERRY_DISK_SIZE_MAX

struct disk_decl {
	uint16_t index;
	uint8_t name_len;
	char name[65];
	uint64_t size;
};

struct disk_table {
	struct disk_decl d[MAX_DISKS];
	size_t n;
};

static const struct disk_decl *disk_find(const struct disk_table *t, uint16_t index)
{
	for (size_t i = 0; i < t->n; i++)
		if (t->d[i].index == index)
			return &t->d[i];
	return NULL;
}

/* Declares (or redeclares, e.g. after a resize) a disk. A redeclaration must
 * keep the name, and no two indices may share a name. */
static int disk_declare(struct disk_table *t, uint16_t index, const char *name, size_t name_len,
			uint64_t size)
{
	if (name_len == 0 || name_len > 64 || size > MAX_DISK_SIZE)
		return -EINVAL;
	char n[65];
	memcpy(n, name, name_len);
	n[name_len] = 0;
	if (strlen(n) != name_len || !ferry_name_valid(n))
		return -EINVAL;

	for (size_t i = 0; i < t->n; i++) {
		int same_name = strcmp(t->d[i].name, n) == 0;
		if (t->d[i].index == index) {
			if (!same_name)
				return -EINVAL;
			t->d[i].size = size;
			return 0;
		}
		if (same_name)
			return -EINVAL;
	}
	if (t->n >= MAX_DISKS)
		return -EINVAL;
	struct disk_decl *d = &t->d[t->n++];
	d->index = index;
	d->name_len = (uint8_t)name_len;
	memcpy(d->name, n, name_len + 1);
	d->size = size;
	return 0;
}

/* The rules for a DATA/ZERO/TRIM range, shared by writer and parser. */
static int range_valid(const struct disk_table *t, uint16_t disk, uint64_t offset, uint64_t length)
{
	const struct disk_decl *d = disk_find(t, disk);
	if (!d)
		return 0;
	if (length == 0 || offset % FERRY_BLOCK_SIZE || length % FERRY_BLOCK_SIZE)
		return 0;
	/* A disk whose size is not a block multiple still gets its last,
	 * partial block shipped whole (zero padded). */
	uint64_t end = (d->size + FERRY_BLOCK_SIZE - 1) / FERRY_BLOCK_SIZE * FERRY_BLOCK_SIZE;
	if (offset > end || length > end - offset)
		return 0;
	return 1;
}

static int consistency_valid(unsigned c)
{
	return c == FERRY_CONSISTENCY_CRASH || c == FERRY_CONSISTENCY_APP;
}

static int marker_time_valid(int64_t t)
{
	return t >= FERRY_MARKER_TIME_MIN_NS && t < FERRY_MARKER_TIME_MAX_NS;
}

/* ---- writer ---- */

struct ferry_segment_writer {
	char vm[65];
	uint64_t seq;
	struct ferry_id prev;
	int64_t created_ns;
	uint32_t nrecords;
	uint8_t *buf;
	size_t len, cap;
	struct disk_table disks;
	unsigned workers;
	uint32_t chunk_size; /* 0: not chunking (format 1.0) */
	int group;           /* holds a group marker (format 3.0) */
};

/* The link before seq: prev, or the null id for NULL. The chain starts at
 * 1; every later link names its predecessor. NULL when they disagree. */
static const struct ferry_id *chain_prev(uint64_t seq, const struct ferry_id *prev)
{
	static const struct ferry_id null_id;
	if (!prev)
		prev = &null_id;
	return (seq == 1) == !!ferry_id_is_null(prev) ? prev : NULL;
}

int ferry_segment_writer_reset(struct ferry_segment_writer *w, uint64_t seq,
			       const struct ferry_id *prev)
{
	if (seq == 0 || !(prev = chain_prev(seq, prev)))
		return -EINVAL;
	w->seq = seq;
	w->prev = *prev;
	w->created_ns = ferry_now_ns();
	w->nrecords = 0;
	w->len = 0;
	w->disks.n = 0;
	w->group = 0;
	return 0;
}

int ferry_segment_writer_set_prev(struct ferry_segment_writer *w, const struct ferry_id *prev)
{
	if (!(prev = chain_prev(w->seq, prev)))
		return -EINVAL;
	w->prev = *prev;
	return 0;
}

int ferry_segment_writer_new(const char *vm, uint64_t seq, const struct ferry_id *prev,
			     struct ferry_segment_writer **ret)
{
	if (!ferry_name_valid(vm))
		return -EINVAL;
	struct ferry_segment_writer *w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	strcpy(w->vm, vm);
	int r = ferry_segment_writer_reset(w, seq, prev);
	if (r < 0) {
		free(w);
		return r;
	}
	*ret = w;
	return 0;
}

struct ferry_segment_writer *ferry_segment_writer_free(struct ferry_segment_writer *w)
{
	if (w) {
		free(w->buf);
		free(w);
	}
	return NULL;
}

/* Reserves n more payload bytes and returns where they go. */
static int reserve(struct ferry_segment_writer *w, uint64_t n, uint8_t **ret)
{
	if (n > PLAIN_LIMIT || w->len + n > PLAIN_LIMIT)
		return -E2BIG;
	if (w->len + n > w->cap) {
		size_t cap = MAX(w->cap * 2, (size_t)64 * 1024);
		while (cap < w->len + n)
			cap *= 2;
		uint8_t *b = realloc(w->buf, cap);
		if (!b)
			return -ENOMEM;
		w->buf = b;
		w->cap = cap;
	}
	*ret = w->buf + w->len;
	w->len += n;
	return 0;
}

static void put_common(uint8_t *p, enum ferry_rec_type type, uint16_t disk, uint64_t offset,
		       uint64_t length)
{
	p[0] = (uint8_t)type;
	put_le16(p + 1, disk);
	put_le64(p + 3, offset);
	put_le64(p + 11, length);
}

int ferry_segment_writer_add_disk(struct ferry_segment_writer *w, uint16_t disk, const char *name,
				  uint64_t size)
{
	if (!ferry_name_valid(name))
		return -EINVAL;
	if (size > MAX_DISK_SIZE)
		return -EFBIG;
	size_t n = strlen(name);
	uint8_t *p;
	int r = reserve(w, R_COMMON + R_DISK_EXTRA + n, &p);
	if (r < 0)
		return r;
	/* disk_declare() changes nothing when it refuses; take the bytes back. */
	r = disk_declare(&w->disks, disk, name, n, size);
	if (r < 0) {
		w->len -= R_COMMON + R_DISK_EXTRA + n;
		return r;
	}
	put_common(p, FERRY_REC_DISK, disk, 0, size);
	p[R_COMMON] = (uint8_t)n;
	memcpy(p + R_COMMON + 1, name, n);
	w->nrecords++;
	return 0;
}

static int add_range(struct ferry_segment_writer *w, enum ferry_rec_type type, uint16_t disk,
		     uint64_t offset, const void *buf, uint64_t len)
{
	if (!range_valid(&w->disks, disk, offset, len))
		return -EINVAL;
	uint64_t extra = type == FERRY_REC_DATA ? len : 0;
	if (extra > PLAIN_LIMIT)
		return -E2BIG;
	uint8_t *p;
	int r = reserve(w, R_COMMON + extra, &p);
	if (r < 0)
		return r;
	put_common(p, type, disk, offset, len);
	if (extra)
		memcpy(p + R_COMMON, buf, extra);
	w->nrecords++;
	return 0;
}

int ferry_segment_writer_add_data(struct ferry_segment_writer *w, uint16_t disk, uint64_t offset,
				  const void *buf, uint64_t len)
{
	if (!buf && len)
		return -EINVAL;
	return add_range(w, FERRY_REC_DATA, disk, offset, buf, len);
}

int ferry_segment_writer_add_zero(struct ferry_segment_writer *w, uint16_t disk, uint64_t offset,
				  uint64_t len)
{
	return add_range(w, FERRY_REC_ZERO, disk, offset, NULL, len);
}

int ferry_segment_writer_add_trim(struct ferry_segment_writer *w, uint16_t disk, uint64_t offset,
				  uint64_t len)
{
	return add_range(w, FERRY_REC_TRIM, disk, offset, NULL, len);
}

static int add_marker(struct ferry_segment_writer *w, enum ferry_consistency consistency,
		      int64_t time_ns, uint64_t round)
{
	if (!consistency_valid((unsigned)consistency) || round > FERRY_GROUP_ROUND_MAX)
		return -EINVAL;
	if (!marker_time_valid(time_ns))
		return -ERANGE;
	uint8_t *p;
	int r = reserve(w, R_COMMON + R_MARKER_EXTRA, &p);
	if (r < 0)
		return r;
	/* The group round goes where 1.0 and 2.0 readers insist on zero. */
	put_common(p, FERRY_REC_MARKER, 0, round, 0);
	p[R_COMMON] = (uint8_t)consistency;
	put_le64(p + R_COMMON + 1, (uint64_t)time_ns);
	w->nrecords++;
	if (round)
		w->group = 1;
	return 0;
}

int ferry_segment_writer_add_marker(struct ferry_segment_writer *w,
				    enum ferry_consistency consistency, int64_t time_ns)
{
	return add_marker(w, consistency, time_ns, 0);
}

int ferry_segment_writer_add_group_marker(struct ferry_segment_writer *w,
					  enum ferry_consistency consistency, int64_t time_ns,
					  uint64_t round)
{
	if (round == 0)
		return -EINVAL;
	return add_marker(w, consistency, time_ns, round);
}

uint64_t ferry_segment_writer_size(const struct ferry_segment_writer *w)
{
	return w->len;
}

static size_t header_len_for(size_t vm_len)
{
	return (H_FIXED + vm_len + 7) / 8 * 8;
}

void ferry_segment_writer_set_workers(struct ferry_segment_writer *w, unsigned workers)
{
	w->workers = workers;
}

int ferry_segment_writer_set_chunking(struct ferry_segment_writer *w, uint32_t chunk_size)
{
	if (chunk_size < FERRY_BLOCK_SIZE || chunk_size > DATAZ_MAX_PLAIN ||
	    (chunk_size & (chunk_size - 1)))
		return -EINVAL;
	w->chunk_size = chunk_size;
	return 0;
}

/*
 * Chunked encoding. Every record of the plain buffer becomes an item: kept
 * as it is (COPY), or, for DATA, one PIECE per chunk window. Each item gets
 * a slot in the output as large as it can ever become; pieces are
 * compressed into their slots on several threads, then one pass moves every
 * item down to where it really goes. Slots only ever shrink, so the move
 * never overwrites an item that has not moved yet.
 */
enum item_kind {
	ITEM_COPY,
	ITEM_PIECE
};

struct item {
	size_t src;  /* in the plain buffer: the record (COPY) or the piece's bytes */
	size_t slot; /* in the output */
	uint32_t len;
	uint32_t zlen; /* PIECE: compressed size, 0 = ships raw */
	uint64_t offset;
	uint16_t disk;
	uint8_t kind;
};

struct compress_job {
	const struct ferry_segment_writer *w;
	struct item *items;
	size_t nitems;
	uint8_t *out;
	atomic_size_t next;
};

static void *compress_pieces(void *arg)
{
	struct compress_job *j = arg;
	ZSTD_CCtx *cctx = ZSTD_createCCtx();
	for (;;) {
		size_t k = atomic_fetch_add(&j->next, 1);
		if (k >= j->nitems)
			break;
		struct item *it = &j->items[k];
		if (it->kind != ITEM_PIECE || !cctx || it->len < 2)
			continue;
		/* One byte short of raw: zstd gives up as soon as it cannot win,
		 * and early on incompressible data. Failure means "ship raw". */
		size_t z = ZSTD_compressCCtx(cctx, j->out + it->slot + R_COMMON + R_DATAZ_EXTRA,
					     it->len - 1, j->w->buf + it->src, it->len, ZSTD_LEVEL);
		if (!ZSTD_isError(z) && z > 0 && z < it->len)
			it->zlen = (uint32_t)z;
	}
	ZSTD_freeCCtx(cctx);
	return NULL;
}

/* The most an item can take in the output: a piece as DATAZ is shorter than
 * its data, as DATA shorter still. */
static size_t item_room(const struct item *it)
{
	return it->kind == ITEM_COPY ? it->len : R_COMMON + R_DATAZ_EXTRA + it->len;
}

/* Size of the record at p of the writer's own (trusted) buffer. */
static size_t record_size(const uint8_t *p)
{
	switch (p[0]) {
	case FERRY_REC_DISK:
		return R_COMMON + R_DISK_EXTRA + p[R_COMMON];
	case FERRY_REC_DATA:
		return R_COMMON + get_le64(p + 11);
	case FERRY_REC_MARKER:
		return R_COMMON + R_MARKER_EXTRA;
	default:
		return R_COMMON;
	}
}

/* Splits the records into items; with ret NULL only counts them. */
static size_t plan_items(const struct ferry_segment_writer *w, struct item *ret)
{
	size_t n = 0;
	for (size_t pos = 0; pos < w->len;) {
		const uint8_t *p = w->buf + pos;
		size_t rlen = record_size(p);
		if (p[0] != FERRY_REC_DATA) {
			if (ret)
				ret[n] = (struct item){ .src = pos,
							.len = (uint32_t)rlen,
							.kind = ITEM_COPY };
			n++;
			pos += rlen;
			continue;
		}
		uint16_t disk = get_le16(p + 1);
		uint64_t off = get_le64(p + 3), end = off + get_le64(p + 11);
		size_t src = pos + R_COMMON;
		while (off < end) {
			uint64_t next = MIN((off / w->chunk_size + 1) * w->chunk_size, end);
			if (ret)
				ret[n] = (struct item){ .src = src,
							.len = (uint32_t)(next - off),
							.offset = off,
							.disk = disk,
							.kind = ITEM_PIECE };
			n++;
			src += next - off;
			off = next;
		}
		pos += rlen;
	}
	return n;
}

/* Encodes the items into out, which has room for all their slots, and
 * returns the payload's length. */
static size_t encode_chunked(const struct ferry_segment_writer *w, struct item *items, size_t n,
			     uint8_t *out)
{
	size_t slot = 0;
	for (size_t k = 0; k < n; k++) {
		items[k].slot = slot;
		slot += item_room(&items[k]);
	}

	struct compress_job job = { .w = w, .items = items, .nitems = n, .out = out };
	atomic_init(&job.next, 0);
	ferry_run_parallel(compress_pieces, &job, MIN(MAX(w->workers, 1u), 16u));

	size_t cur = 0;
	for (size_t k = 0; k < n; k++) {
		const struct item *it = &items[k];
		uint8_t *d = out + cur;
		if (it->kind == ITEM_COPY) {
			memcpy(d, w->buf + it->src, it->len);
			cur += it->len;
		} else if (it->zlen) {
			put_common(d, FERRY_REC_DATAZ, it->disk, it->offset, it->len);
			put_le32(d + R_COMMON, it->zlen);
			memmove(d + R_COMMON + R_DATAZ_EXTRA,
				out + it->slot + R_COMMON + R_DATAZ_EXTRA, it->zlen);
			cur += R_COMMON + R_DATAZ_EXTRA + it->zlen;
		} else {
			put_common(d, FERRY_REC_DATA, it->disk, it->offset, it->len);
			memcpy(d + R_COMMON, w->buf + it->src, it->len);
			cur += R_COMMON + it->len;
		}
	}
	return cur;
}

int ferry_segment_writer_finish(struct ferry_segment_writer *w, void **ret_buf, size_t *ret_len,
				struct ferry_segment_info *ret_info)
{
	size_t vm_len = strlen(w->vm);
	size_t hlen = header_len_for(vm_len);
	_cleanup_free_ struct item *items = NULL;
	size_t nitems = 0, room;

	if (w->chunk_size) {
		nitems = plan_items(w, NULL);
		items = calloc(MAX(nitems, (size_t)1), sizeof(*items));
		if (!items)
			return -ENOMEM;
		plan_items(w, items);
		/* A record count is a u32 in the header. */
		if (nitems > UINT32_MAX)
			return -E2BIG;
		room = 0;
		for (size_t k = 0; k < nitems; k++)
			room += item_room(&items[k]);
	} else {
		room = MAX(ZSTD_compressBound(w->len), w->len);
	}
	size_t bound = ZSTD_compressBound(w->len);
	size_t cap = hlen + room + TRAILER_SIZE;

	_cleanup_free_ uint8_t *out = calloc(1, cap);
	if (!out)
		return -ENOMEM;

	uint8_t comp = COMP_NONE;
	size_t stored = w->len, plain = w->len;
	uint32_t nrecords = w->nrecords;
	if (w->chunk_size) {
		stored = encode_chunked(w, items, nitems, out + hlen);
		plain = stored;
		nrecords = (uint32_t)nitems;
	} else if (w->len > 0) {
		ZSTD_CCtx *cctx = ZSTD_createCCtx();
		if (!cctx)
			return -ENOMEM;
		ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, ZSTD_LEVEL);
		/* Without multi-threading support in libzstd this fails and the
		 * segment is simply compressed on the calling thread. */
		if (w->workers > 1)
			ZSTD_CCtx_setParameter(cctx, ZSTD_c_nbWorkers, (int)w->workers);
		size_t z = ZSTD_compress2(cctx, out + hlen, bound, w->buf, w->len);
		ZSTD_freeCCtx(cctx);
		if (ZSTD_isError(z))
			return -ENOMEM; /* the only way it fails with a full-size bound */
		if (z < w->len) {
			comp = COMP_ZSTD;
			stored = z;
		} else {
			memcpy(out + hlen, w->buf, w->len);
		}
	}
	if (plain > PLAIN_LIMIT)
		return -E2BIG;

	memcpy(out + H_MAGIC, SEG_MAGIC, 8);
	put_le16(out + H_MAJOR, w->group      ? SEG_MAJOR_GROUP :
				w->chunk_size ? SEG_MAJOR_CHUNKED :
						SEG_MAJOR);
	put_le16(out + H_MINOR, SEG_MINOR);
	put_le32(out + H_HDRLEN, (uint32_t)hlen);
	put_le64(out + H_SEQ, w->seq);
	memcpy(out + H_PREV, w->prev.b, FERRY_ID_SIZE);
	put_le64(out + H_CREATED, (uint64_t)w->created_ns);
	put_le32(out + H_NRECORDS, nrecords);
	put_le32(out + H_FLAGS, 0);
	put_le64(out + H_PLAIN, plain);
	put_le64(out + H_STORED, stored);
	out[H_COMPRESSION] = comp;
	out[H_VMLEN] = (uint8_t)vm_len;
	memcpy(out + H_VM, w->vm, vm_len);

	size_t total = hlen + stored + TRAILER_SIZE;
	struct ferry_id digest;
	ferry_sha256(out, hlen + stored, &digest);
	memcpy(out + hlen + stored, digest.b, FERRY_ID_SIZE);
	memcpy(out + hlen + stored + FERRY_ID_SIZE, SEG_END_MAGIC, 8);

	if (ret_info) {
		struct ferry_segment_info info = { 0 };
		strcpy(info.vm, w->vm);
		info.seq = w->seq;
		info.prev = w->prev;
		info.digest = digest;
		info.created_ns = w->created_ns;
		info.nrecords = nrecords;
		*ret_info = info;
	}
	/* Give back the slack of the compress bound. */
	uint8_t *shrunk = realloc(out, total);
	if (shrunk)
		out = shrunk;
	*ret_buf = TAKE_PTR(out);
	*ret_len = total;
	return 0;
}

/* ---- parser ---- */

struct rec_index {
	uint32_t off;  /* record start in the plain payload */
	uint32_t name; /* DISK: offset of its NUL-terminated name in names */
};

struct ferry_segment {
	struct ferry_segment_info info;
	uint8_t *plain;
	size_t plain_len;
	struct rec_index *recs;
	char *names;
};

struct ferry_segment *ferry_segment_free(struct ferry_segment *s)
{
	if (s) {
		free(s->plain);
		free(s->recs);
		free(s->names);
		free(s);
	}
	return NULL;
}

DEFINE_TRIVIAL_CLEANUP_FUNC(struct ferry_segment *, ferry_segment_free);

/* A DATAZ frame must say it holds exactly length bytes, and be exactly
 * one frame; decompression then checks the content itself. */
static int frame_valid(const uint8_t *frame, size_t flen, uint64_t length)
{
	if (flen == 0 || flen >= length || length > DATAZ_MAX_PLAIN)
		return 0;
	if (ZSTD_getFrameContentSize(frame, flen) != length)
		return 0;
	return ZSTD_findFrameCompressedSize(frame, flen) == flen;
}

/* Walks every record once, checking all of them and filling the index. */
static int validate_records(struct ferry_segment *s, unsigned major)
{
	const uint8_t *p = s->plain;
	size_t len = s->plain_len, pos = 0, names_len = 0;
	uint32_t n = s->info.nrecords;
	/* What DATAZ frames unpack to is bounded like a plain payload, so a
	 * small segment cannot make a replicator allocate without limit. */
	uint64_t unpacked = 0;

	/* Every record is at least R_COMMON bytes: refuse a count the payload
	 * cannot hold before allocating for it. */
	if (n > len / R_COMMON)
		return -EBADMSG;
	s->recs = malloc(MAX((size_t)n, 1) * sizeof(*s->recs));
	_cleanup_free_ struct disk_table *t = calloc(1, sizeof(*t));
	if (!s->recs || !t)
		return -ENOMEM;
	size_t names_cap = 0;

	for (uint32_t i = 0; i < n; i++) {
		if (len - pos < R_COMMON)
			return -EBADMSG;
		const uint8_t *r = p + pos;
		uint8_t type = r[0];
		uint16_t disk = get_le16(r + 1);
		uint64_t offset = get_le64(r + 3), length = get_le64(r + 11);
		size_t rest = len - pos - R_COMMON;

		s->recs[i].off = (uint32_t)pos;
		s->recs[i].name = 0;
		switch (type) {
		case FERRY_REC_DISK: {
			if (offset != 0 || rest < R_DISK_EXTRA)
				return -EBADMSG;
			size_t nl = r[R_COMMON];
			if (rest - R_DISK_EXTRA < nl)
				return -EBADMSG;
			const char *name = (const char *)r + R_COMMON + 1;
			if (disk_declare(t, disk, name, nl, length) < 0)
				return -EBADMSG;
			if (names_len + nl + 1 > names_cap) {
				size_t cap = MAX(names_cap * 2, (size_t)256);
				char *nn = realloc(s->names, cap);
				if (!nn)
					return -ENOMEM;
				s->names = nn;
				names_cap = cap;
			}
			s->recs[i].name = (uint32_t)names_len;
			memcpy(s->names + names_len, name, nl);
			s->names[names_len + nl] = 0;
			names_len += nl + 1;
			pos += R_COMMON + R_DISK_EXTRA + nl;
			break;
		}
		case FERRY_REC_DATA:
			if (!range_valid(t, disk, offset, length) || rest < length)
				return -EBADMSG;
			pos += R_COMMON + length;
			break;
		case FERRY_REC_DATAZ: {
			if (major < SEG_MAJOR_CHUNKED || !range_valid(t, disk, offset, length) ||
			    rest < R_DATAZ_EXTRA)
				return -EBADMSG;
			size_t flen = get_le32(r + R_COMMON);
			if (rest - R_DATAZ_EXTRA < flen ||
			    !frame_valid(r + R_COMMON + R_DATAZ_EXTRA, flen, length))
				return -EBADMSG;
			unpacked += length;
			if (unpacked > PLAIN_LIMIT)
				return -EBADMSG;
			pos += R_COMMON + R_DATAZ_EXTRA + flen;
			break;
		}
		case FERRY_REC_ZERO:
		case FERRY_REC_TRIM:
			if (!range_valid(t, disk, offset, length))
				return -EBADMSG;
			pos += R_COMMON;
			break;
		case FERRY_REC_MARKER:
			/* offset: the group round, from 3.0 on; zero before. */
			if (disk != 0 || length != 0 || rest < R_MARKER_EXTRA ||
			    offset > (major < SEG_MAJOR_GROUP ? 0 : FERRY_GROUP_ROUND_MAX))
				return -EBADMSG;
			if (!consistency_valid(r[R_COMMON]) ||
			    !marker_time_valid((int64_t)get_le64(r + R_COMMON + 1)))
				return -EBADMSG;
			pos += R_COMMON + R_MARKER_EXTRA;
			break;
		default:
			return -EBADMSG;
		}
	}
	if (pos != len)
		return -EBADMSG;
	return 0;
}

int ferry_segment_parse(const void *buf, size_t len, struct ferry_segment **ret)
{
	const uint8_t *b = buf;

	/* The envelope (magic, major version field, trailer) is the same in
	 * every major version, which is what lets damage (-EBADMSG) be told
	 * apart from a version this reader does not know. */
	if (!buf || len < H_FIXED + 1 + TRAILER_SIZE || len > FERRY_SEGMENT_MAX_SIZE)
		return -EBADMSG;
	if (memcmp(b + H_MAGIC, SEG_MAGIC, 8) != 0 || memcmp(b + len - 8, SEG_END_MAGIC, 8) != 0)
		return -EBADMSG;
	struct ferry_id digest;
	ferry_sha256(b, len - TRAILER_SIZE, &digest);
	if (memcmp(digest.b, b + len - TRAILER_SIZE, FERRY_ID_SIZE) != 0)
		return -EBADMSG;
	unsigned major = get_le16(b + H_MAJOR);
	if (major != SEG_MAJOR && major != SEG_MAJOR_CHUNKED && major != SEG_MAJOR_GROUP)
		return -EPROTONOSUPPORT;

	size_t hlen = get_le32(b + H_HDRLEN);
	size_t vm_len = b[H_VMLEN];
	uint64_t plain_len = get_le64(b + H_PLAIN), stored = get_le64(b + H_STORED);
	uint8_t comp = b[H_COMPRESSION];
	if (vm_len == 0 || vm_len > 64 || hlen < H_FIXED + vm_len || hlen > H_MAX ||
	    hlen > len - TRAILER_SIZE)
		return -EBADMSG;
	if (stored != len - TRAILER_SIZE - hlen)
		return -EBADMSG;
	if (get_le32(b + H_FLAGS) != 0 || plain_len > PLAIN_LIMIT || stored > PLAIN_LIMIT)
		return -EBADMSG;
	if (comp == COMP_NONE) {
		if (stored != plain_len)
			return -EBADMSG;
	} else if (comp != COMP_ZSTD)
		return -EBADMSG;

	struct ferry_segment_info info = { 0 };
	memcpy(info.vm, b + H_VM, vm_len);
	info.vm[vm_len] = 0;
	if (strlen(info.vm) != vm_len || !ferry_name_valid(info.vm))
		return -EBADMSG;
	info.seq = get_le64(b + H_SEQ);
	memcpy(info.prev.b, b + H_PREV, FERRY_ID_SIZE);
	info.digest = digest;
	info.created_ns = (int64_t)get_le64(b + H_CREATED);
	info.nrecords = get_le32(b + H_NRECORDS);
	if (info.seq == 0 || (info.seq == 1) != !!ferry_id_is_null(&info.prev))
		return -EBADMSG;

	_cleanup_(ferry_segment_freep) struct ferry_segment *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->info = info;
	s->plain_len = plain_len;
	s->plain = malloc(MAX(plain_len, 1));
	if (!s->plain)
		return -ENOMEM;
	if (comp == COMP_ZSTD) {
		size_t z = ZSTD_decompress(s->plain, plain_len, b + hlen, stored);
		if (ZSTD_isError(z)) {
			if (ZSTD_getErrorCode(z) == ZSTD_error_memory_allocation)
				return -ENOMEM;
			return -EBADMSG;
		}
		if (z != plain_len)
			return -EBADMSG;
	} else if (plain_len > 0) {
		memcpy(s->plain, b + hlen, plain_len);
	}

	int r = validate_records(s, major);
	if (r < 0)
		return r;
	*ret = TAKE_PTR(s);
	return 0;
}

const struct ferry_segment_info *ferry_segment_info(const struct ferry_segment *s)
{
	return &s->info;
}

int ferry_segment_record(const struct ferry_segment *s, uint32_t i, struct ferry_record *ret)
{
	if (i >= s->info.nrecords)
		return -ERANGE;
	const uint8_t *p = s->plain + s->recs[i].off;
	struct ferry_record rec = { 0 };
	rec.type = (enum ferry_rec_type)p[0];
	switch (rec.type) {
	case FERRY_REC_DISK:
		rec.disk = get_le16(p + 1);
		rec.length = get_le64(p + 11);
		rec.name = s->names + s->recs[i].name;
		break;
	case FERRY_REC_DATAZ:
		rec.frame_len = get_le32(p + R_COMMON);
		rec.frame = p + R_COMMON + R_DATAZ_EXTRA;
		/* fall through */
	case FERRY_REC_DATA:
		if (rec.type == FERRY_REC_DATA)
			rec.data = p + R_COMMON;
		/* fall through */
	case FERRY_REC_ZERO:
	case FERRY_REC_TRIM:
		rec.disk = get_le16(p + 1);
		rec.offset = get_le64(p + 3);
		rec.length = get_le64(p + 11);
		break;
	case FERRY_REC_MARKER:
		rec.consistency = (enum ferry_consistency)p[R_COMMON];
		rec.time_ns = (int64_t)get_le64(p + R_COMMON + 1);
		rec.group_round = get_le64(p + 3);
		break;
	}
	*ret = rec;
	return 0;
}

/* One decompression context per thread that unpacks, freed with it. */
static pthread_key_t dctx_key;
static pthread_once_t dctx_once = PTHREAD_ONCE_INIT;
static int dctx_key_ok;

static void dctx_free(void *p)
{
	ZSTD_freeDCtx(p);
}

static void dctx_key_init(void)
{
	dctx_key_ok = pthread_key_create(&dctx_key, dctx_free) == 0;
}

int ferry_record_unpack(const struct ferry_record *rec, void *dst)
{
	if (rec->type != FERRY_REC_DATAZ || !rec->frame)
		return -EINVAL;
	pthread_once(&dctx_once, dctx_key_init);
	ZSTD_DCtx *d = dctx_key_ok ? pthread_getspecific(dctx_key) : NULL;
	if (!d) {
		d = ZSTD_createDCtx();
		if (!d)
			return -ENOMEM;
		if (dctx_key_ok && pthread_setspecific(dctx_key, d) != 0) {
			ZSTD_freeDCtx(d);
			return -ENOMEM;
		}
	}
	size_t z = ZSTD_decompressDCtx(d, dst, rec->length, rec->frame, rec->frame_len);
	if (!dctx_key_ok)
		ZSTD_freeDCtx(d);
	if (ZSTD_isError(z))
		return ZSTD_getErrorCode(z) == ZSTD_error_memory_allocation ? -ENOMEM : -EBADMSG;
	return z == rec->length ? 0 : -EBADMSG;
}
