/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Segment application: verify the segment and its place in the VM's chain,
 * feed its records in order to an ingest (ingest.h: chunking, small writes
 * packed together, one pack), cut recovery points at markers by policy (and
 * at every marker of a consistency group's round), and commit everything
 * through the ingest's one transaction once the pack is durable. The reads
 * (the VM, its disks, every dedup look-up) happen in one read transaction;
 * the commit checks that nobody moved the VM meanwhile.
 */
#include "apply.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ferry/catalog.h"
#include "ferry/changelog.h"
#include "ferry/ingest.h"
#include "ferry/map.h"
#include "ferry/records.h"
#include "ferry/store.h"
#include "ferry/util.h"
#include "unpack.h"

#define MAX_DISKS 64

struct new_point {
	struct ferry_point point;
	struct ferry_point_disk disks[MAX_DISKS];
	size_t ndisks;
};

struct disk_state {
	struct ferry_disk disk;
	struct ferry_id read_work_root; /* as the read transaction saw it */
	struct ferry_map *map;
	int declared; /* named in this segment */
};

struct applier {
	struct ferry_vault *vault;
	struct ferry_catalog *cat;
	struct ferry_vm vm;
	struct ferry_ingest *ingest;
	struct ferry_id seg_digest;
	/* The segment the chain takes next: after the last applied one, or
	 * after a resync's base (resync.h). */
	uint64_t want_seq;
	struct ferry_id want_prev;

	struct disk_state disks[MAX_DISKS];
	size_t ndisks;

	struct new_point *points;
	size_t npoints;
	int64_t last_point_ns, last_app_point_ns;

	struct apply_result result;
	char *msg;
	size_t msgsize;
};

static int fail(struct applier *a, int r, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int fail(struct applier *a, int r, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(a->msg, a->msgsize, fmt, ap);
	va_end(ap);
	return r;
}

static void applier_done(struct applier *a)
{
	for (size_t i = 0; i < a->ndisks; i++)
		ferry_map_free(a->disks[i].map);
	ferry_ingest_free(a->ingest);
	free(a->points);
}

static int load_disk(const struct ferry_disk *d, void *userdata)
{
	struct applier *a = userdata;
	if (a->ndisks == MAX_DISKS)
		return -E2BIG;
	a->disks[a->ndisks].read_work_root = d->work_root;
	a->disks[a->ndisks++].disk = *d;
	return 0;
}

static int note_point(const struct ferry_point *p, void *userdata)
{
	struct applier *a = userdata;
	a->last_point_ns = MAX(a->last_point_ns, p->time_ns);
	if (p->consistency == FERRY_CONSISTENCY_APP)
		a->last_app_point_ns = MAX(a->last_app_point_ns, p->time_ns);
	return 0;
}

/* DATA, or DATAZ unpacked (u): a whole chunk that came compressed goes
 * into the store as the frame it came in. */
static int apply_data(struct applier *a, const struct ferry_record *rec, const struct unpacked *u)
{
	struct ferry_map *m = a->disks[rec->disk].map;
	uint64_t block = rec->offset / FERRY_BLOCK_SIZE;
	int r;
	if (u && u->whole_chunk)
		r = ferry_ingest_write_chunk(a->ingest, m, block, u->data, &u->id, rec->frame,
					     rec->frame_len);
	else
		r = ferry_ingest_write(a->ingest, m, block, u ? u->data : rec->data,
				       rec->length / FERRY_BLOCK_SIZE);
	if (r < 0)
		return r;
	a->result.data_bytes += rec->length;

	if (a->vm.state == FERRY_VM_INITIAL) {
		uint64_t done = rec->offset + rec->length;
		for (uint16_t i = 0; i < rec->disk; i++)
			done += a->disks[i].disk.size;
		a->vm.initial_done_bytes = MAX(a->vm.initial_done_bytes, done);
	}
	return 0;
}

static int commit_maps(struct applier *a)
{
	int r = ferry_ingest_flush(a->ingest);
	if (r < 0)
		return r;
	for (size_t i = 0; i < a->ndisks; i++) {
		if (!a->disks[i].map)
			continue;
		r = ferry_map_commit(a->disks[i].map, &a->disks[i].disk.work_root);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Whether an earlier marker of this segment took the name. */
static int name_taken_here(const struct applier *a, const struct new_point *np)
{
	for (const struct new_point *p = a->points; p < np; p++)
		if (strcmp(p->point.name, np->point.name) == 0)
			return 1;
	return 0;
}

/* The point's time as its name, with the first suffix (-0002, -0003, ...)
 * that neither the catalog nor an earlier marker of this segment holds.
 * The suffix is zero padded so that ids sort by time as strings (…Z-0010
 * after …Z-0009); older vaults' ids (…Z-2) stay as they are. */
static int pick_name(struct applier *a, struct new_point *np)
{
	char base[sizeof(np->point.name)];
	int r = ferry_catalog_point_pick_name(a->cat, a->vm.id, np->point.time_ns, base);
	if (r < 0)
		return r;
	*strchrnul(base, '-') = 0; /* the time form has no '-' */
	memcpy(np->point.name, base, sizeof(base));
	for (unsigned n = 2;; n++) {
		r = name_taken_here(a, np) ?:
			    ferry_catalog_point_name_taken(a->cat, a->vm.id, np->point.name);
		if (r <= 0)
			return r;
		snprintf(np->point.name, sizeof(np->point.name), "%.24s-%04u", base, n);
	}
}

/*
 * Names the point and stores its POINT record in the segment's pack; the
 * catalog rows follow at commit (commit_rows). The record carries the
 * name, so it is picked now.
 */
static int add_point(struct applier *a, struct new_point *np)
{
	int r = pick_name(a, np);
	if (r < 0)
		return r;
	struct ferry_record_point pr = {
		.vm_created_ns = a->vm.created_ns,
		.time_ns = np->point.time_ns,
		.consistency = np->point.consistency,
		.seq = np->point.seq,
		.digest = a->seg_digest,
		.group_round = np->point.group_round,
		.disks = np->disks,
		.ndisks = np->ndisks,
	};
	memcpy(pr.vm, a->vm.name, sizeof(pr.vm));
	memcpy(pr.name, np->point.name, sizeof(pr.name));
	_cleanup_free_ char *buf = NULL;
	size_t len;
	r = ferry_record_point_encode(&pr, &buf, &len);
	if (r >= 0)
		r = ferry_ingest_add_record(a->ingest, FERRY_OBJ_POINT, buf, len,
					    &np->point.record);
	return r < 0 ? fail(a, r, "cannot record recovery point %s", np->point.name) : 0;
}

/* The VM's state after this segment, as a STATE record in its pack: what
 * ferry attach restores so that replication continues from here. */
static int add_state(struct applier *a, const struct ferry_segment_info *info)
{
	a->vm.applied_seq = info->seq;
	a->vm.applied_digest = info->digest;
	a->vm.error[0] = 0;
	struct ferry_disk *disks = calloc(a->ndisks ?: 1, sizeof(*disks));
	if (!disks)
		return -ENOMEM;
	for (size_t i = 0; i < a->ndisks; i++)
		disks[i] = a->disks[i].disk;
	/* A resync in progress is recorded as the state it ends in: what
	 * attach restores continues the chain, whatever resync it was. */
	enum ferry_vm_state st = a->vm.state;
	if (st == FERRY_VM_RESYNCING)
		st = a->vm.marker_seq ? FERRY_VM_PROTECTED : FERRY_VM_INITIAL;
	struct ferry_record_state sr = {
		.vm_created_ns = a->vm.created_ns,
		.state = (int)st,
		.applied_seq = a->vm.applied_seq,
		.applied_digest = a->vm.applied_digest,
		.marker_seq = a->vm.marker_seq,
		.marker_ns = a->vm.marker_ns,
		.initial_done = a->vm.initial_done_bytes,
		.initial_total = a->vm.initial_total_bytes,
		.disks = disks,
		.ndisks = a->ndisks,
	};
	memcpy(sr.vm, a->vm.name, sizeof(sr.vm));
	_cleanup_free_ char *buf = NULL;
	size_t len;
	int r = ferry_record_state_encode(&sr, &buf, &len);
	free(disks);
	if (r >= 0)
		r = ferry_ingest_add_record(a->ingest, FERRY_OBJ_STATE, buf, len,
					    &a->vm.state_record);
	return r < 0 ? fail(a, r, "cannot record the state of VM '%s'", a->vm.name) : 0;
}

static int apply_marker(struct applier *a, const struct ferry_record *rec, uint64_t seq)
{
	int r = commit_maps(a);
	if (r < 0)
		return r;
	for (size_t i = 0; i < a->ndisks; i++)
		if (!a->disks[i].declared)
			return fail(a, -EINVAL, "marker does not cover disk '%s'",
				    a->disks[i].disk.name);
	for (size_t i = 0; i < a->ndisks; i++)
		a->disks[i].disk.live_root = a->disks[i].disk.work_root;

	a->vm.marker_seq = seq;
	a->vm.marker_ns = rec->time_ns;
	a->vm.state = FERRY_VM_PROTECTED;
	a->vm.initial_done_bytes = a->vm.initial_total_bytes;
	a->result.markers++;

	/* A group's round is a point on every member whatever their
	 * policies: a member that skipped it would leave the round without
	 * a group point. */
	int cut = rec->group_round > 0 || a->vm.crash_interval_s == 0 ||
		  ferry_time_since(rec->time_ns, a->last_point_ns) >=
			  ferry_seconds_ns(a->vm.crash_interval_s) ||
		  (rec->consistency == FERRY_CONSISTENCY_APP && a->vm.app_interval_s > 0 &&
		   ferry_time_since(rec->time_ns, a->last_app_point_ns) >=
			   ferry_seconds_ns(a->vm.app_interval_s));
	if (!cut)
		return 0;

	struct new_point *np = realloc(a->points, (a->npoints + 1) * sizeof(*np));
	if (!np)
		return -ENOMEM;
	a->points = np;
	np = &a->points[a->npoints++];
	memset(np, 0, sizeof(*np));
	np->point = (struct ferry_point){ .vm_id = a->vm.id,
					  .time_ns = rec->time_ns,
					  .consistency = (int)rec->consistency,
					  .seq = seq,
					  .group_round = rec->group_round };
	for (size_t i = 0; i < a->ndisks; i++) {
		struct ferry_point_disk *pd = &np->disks[np->ndisks++];
		pd->idx = a->disks[i].disk.idx;
		memcpy(pd->name, a->disks[i].disk.name, sizeof(pd->name));
		pd->size = a->disks[i].disk.size;
		pd->root = a->disks[i].disk.live_root;
	}
	r = add_point(a, np);
	if (r < 0)
		return r;
	a->last_point_ns = rec->time_ns;
	if (rec->consistency == FERRY_CONSISTENCY_APP)
		a->last_app_point_ns = rec->time_ns;
	return 0;
}

static int declare_disk(struct applier *a, const struct ferry_record *rec)
{
	if (rec->disk >= a->ndisks || strcmp(a->disks[rec->disk].disk.name, rec->name) != 0)
		return fail(a, -EINVAL, "disk %u '%s' is not a disk of VM '%s'", rec->disk,
			    rec->name, a->vm.name);
	struct disk_state *ds = &a->disks[rec->disk];
	if (ds->disk.size != 0 && ds->disk.size != rec->length)
		return fail(a, -EINVAL,
			    "disk '%s' changed size from %llu to %llu bytes; resizing is not "
			    "supported yet",
			    ds->disk.name, (unsigned long long)ds->disk.size,
			    (unsigned long long)rec->length);
	if (rec->length == 0 || rec->length > FERRY_DISK_SIZE_MAX)
		return fail(a, -EINVAL,
			    "disk '%s' declares a size of %llu bytes; a disk has 1 to %llu bytes",
			    ds->disk.name, (unsigned long long)rec->length,
			    (unsigned long long)FERRY_DISK_SIZE_MAX);
	ds->disk.size = rec->length;
	ds->declared = 1;
	if (!ds->map) {
		int r = ferry_map_open(ferry_ingest_objsrc(a->ingest), &ds->disk.work_root,
				       DIV_ROUND_UP(rec->length, FERRY_BLOCK_SIZE), &ds->map);
		if (r < 0)
			return fail(a, r, "cannot open the map of disk '%s'", ds->disk.name);
	}
	return 0;
}

static int check_range(struct applier *a, const struct ferry_record *rec)
{
	if (rec->disk >= a->ndisks || !a->disks[rec->disk].declared)
		return fail(a, -EINVAL, "record for undeclared disk %u", rec->disk);
	uint64_t size =
		DIV_ROUND_UP(a->disks[rec->disk].disk.size, FERRY_BLOCK_SIZE) * FERRY_BLOCK_SIZE;
	if (rec->offset > size || rec->length > size - rec->offset)
		return fail(a, -EINVAL, "record at %llu+%llu lies beyond the end of disk '%s'",
			    (unsigned long long)rec->offset, (unsigned long long)rec->length,
			    a->disks[rec->disk].disk.name);
	return 0;
}

struct prepared_segment {
	struct ferry_segment *seg;
	struct unpack *up;
};

struct prepared_segment *apply_prepared_free(struct prepared_segment *p)
{
	if (p) {
		unpack_free(p->up);
		ferry_segment_free(p->seg);
		free(p);
	}
	return NULL;
}
DEFINE_TRIVIAL_CLEANUP_FUNC(struct prepared_segment *, apply_prepared_free)

int apply_prepare(struct ferry_vault *v, const void *buf, size_t len, struct prepared_segment **ret,
		  char *msg, size_t msgsize)
{
	_cleanup_(apply_prepared_freep) struct prepared_segment *p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	int r = ferry_segment_parse(buf, len, &p->seg);
	if (r < 0) {
		snprintf(msg, msgsize, "%s",
			 r == -EPROTONOSUPPORT ? "segment format version not supported" :
						 "segment is damaged (checksum or structure)");
		return r;
	}
	/* Unpacking and hashing are most of the work: all cores, up front. */
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	r = unpack_segment(p->seg, ferry_vault_chunk_size(v), (unsigned)MIN(MAX(cpus, 1L), 8L),
			   &p->up);
	if (r < 0) {
		snprintf(msg, msgsize, "out of memory unpacking the segment");
		return r;
	}
	*ret = TAKE_PTR(p);
	return 0;
}

static int apply_records(struct applier *a, const struct prepared_segment *p)
{
	const struct ferry_segment *seg = p->seg;
	const struct ferry_segment_info *info = ferry_segment_info(seg);
	const struct unpack *up = p->up;
	int r;
	for (uint32_t i = 0; i < info->nrecords; i++) {
		struct ferry_record rec;
		const struct unpacked *u;
		r = ferry_segment_record(seg, i, &rec);
		if (r < 0)
			return fail(a, r, "record %u unreadable", i);
		switch (rec.type) {
		case FERRY_REC_DISK:
			r = declare_disk(a, &rec);
			break;
		case FERRY_REC_DATA:
			r = check_range(a, &rec);
			if (r >= 0)
				r = apply_data(a, &rec, NULL);
			break;
		case FERRY_REC_DATAZ:
			u = unpack_get(up, i);
			r = check_range(a, &rec);
			if (r >= 0 && (!u || u->error))
				r = fail(a, -EBADMSG,
					 "record %u: its compressed data does not unpack to %llu "
					 "bytes (damaged segment)",
					 i, (unsigned long long)rec.length);
			if (r >= 0)
				r = apply_data(a, &rec, u);
			break;
		case FERRY_REC_ZERO:
		case FERRY_REC_TRIM:
			r = check_range(a, &rec);
			if (r >= 0)
				r = ferry_ingest_zero(a->ingest, a->disks[rec.disk].map,
						      rec.offset / FERRY_BLOCK_SIZE,
						      rec.length / FERRY_BLOCK_SIZE);
			break;
		case FERRY_REC_MARKER:
			r = apply_marker(a, &rec, info->seq);
			break;
		default:
			r = fail(a, -EBADMSG, "record %u has unknown type %d", i, rec.type);
		}
		if (r < 0) {
			if (!a->msg[0])
				fail(a, r, "record %u failed", i);
			return r;
		}
	}
	return commit_maps(a);
}

/* What commit_rows needs beyond the applier. */
struct commit_ctx {
	struct applier *a;
	const struct ferry_segment_info *info;
	uint64_t read_seq; /* the VM's applied_seq when the reads began */
	enum ferry_vm_state read_state;
};

/* Nobody may have moved the VM or its disks since the read transaction:
 * another applier, or a failover verb. -ESTALE sends the segment round
 * again, to be applied (or refused) against what is there now. */
static int check_unmoved(struct commit_ctx *cc, struct ferry_vm *now)
{
	struct applier *a = cc->a;
	int r = ferry_catalog_vm_get_by_id(a->cat, a->vm.id, now);
	if (r < 0)
		return r;
	if (now->applied_seq != cc->read_seq || now->state != cc->read_state)
		return -ESTALE;
	for (size_t i = 0; i < a->ndisks; i++) {
		struct ferry_disk d;
		r = ferry_catalog_disk_get(a->cat, a->vm.id, a->disks[i].disk.name, &d);
		if (r < 0)
			return r;
		if (!ferry_id_equal(&d.work_root, &a->disks[i].read_work_root))
			return -ESTALE;
	}
	return 0;
}

/* Everything the segment produced, in the ingest's commit transaction. */
static int commit_rows(struct ferry_catalog *c, void *userdata)
{
	struct commit_ctx *cc = userdata;
	struct applier *a = cc->a;
	struct ferry_vm now;
	int r = check_unmoved(cc, &now);
	for (size_t i = 0; r >= 0 && i < a->npoints; i++)
		r = ferry_catalog_point_add(c, &a->points[i].point, a->points[i].disks,
					    a->points[i].ndisks);
	for (size_t i = 0; r >= 0 && i < a->ndisks; i++)
		r = ferry_catalog_disk_update(c, &a->disks[i].disk);
	/* The fields a segment moves, onto the VM as it is now. */
	if (r >= 0) {
		now.state = a->vm.state;
		now.applied_seq = cc->info->seq;
		now.applied_digest = cc->info->digest;
		now.error[0] = 0;
		now.marker_seq = a->vm.marker_seq;
		now.marker_ns = a->vm.marker_ns;
		now.initial_done_bytes = a->vm.initial_done_bytes;
		now.initial_total_bytes = a->vm.initial_total_bytes;
		now.state_record = a->vm.state_record;
		r = ferry_catalog_vm_update(c, &now);
	}
	for (size_t i = 0; r >= 0 && i < a->npoints; i++) {
		char ev[160], round[48] = "";
		if (a->points[i].point.group_round)
			snprintf(round, sizeof(round), ", group round %llu",
				 (unsigned long long)a->points[i].point.group_round);
		snprintf(ev, sizeof(ev), "recovery point %s (%s) cut at segment %llu%s",
			 a->points[i].point.name,
			 a->points[i].point.consistency == FERRY_CONSISTENCY_APP ? "app" : "crash",
			 (unsigned long long)cc->info->seq, round);
		r = ferry_catalog_event_add(c, a->vm.id, "info", ev);
	}
	return r;
}

/* Where the chain goes on; a resync-required VM takes only the first
 * segment of the agent's resync, which becomes resyncing with it. */
static int chain_start(struct applier *a)
{
	a->want_seq = a->vm.applied_seq + 1;
	a->want_prev = a->vm.applied_digest;
	if (a->vm.state != FERRY_VM_RESYNC_REQUIRED)
		return 0;
	struct ferry_vm_resync rs;
	int r = ferry_catalog_resync_get(a->cat, a->vm.id, &rs);
	if (r < 0)
		return r;
	a->want_seq = rs.base_seq + 1;
	a->want_prev = rs.base_digest;
	a->vm.state = FERRY_VM_RESYNCING;
	return 0;
}

static int check_chain(struct applier *a, uint64_t seq, const struct ferry_segment_info *info)
{
	if (info->seq != seq)
		return fail(a, -ESTALE, "named as segment %llu but holds segment %llu",
			    (unsigned long long)seq, (unsigned long long)info->seq);
	if (strcmp(info->vm, a->vm.name) != 0)
		return fail(a, -ESTALE, "segment belongs to VM '%s', not '%s'", info->vm,
			    a->vm.name);
	if (info->seq <= a->vm.applied_seq) {
		a->result.already_applied = 1;
		return 0;
	}
	if (info->seq != a->want_seq)
		return fail(a, -ESTALE, "out of sequence: expected segment %llu, got %llu",
			    (unsigned long long)a->want_seq, (unsigned long long)info->seq);
	if (!ferry_id_equal(&info->prev, &a->want_prev)) {
		char want[FERRY_ID_HEX_SIZE], got[FERRY_ID_HEX_SIZE];
		return fail(a, -ESTALE,
			    "segment %llu does not follow the last applied one (prev %.16s, "
			    "expected %.16s)",
			    (unsigned long long)info->seq, ferry_id_to_hex(&info->prev, got),
			    ferry_id_to_hex(&a->want_prev, want));
	}
	return 0;
}

int apply_prepared(struct ferry_vault *v, const char *vm_name, uint64_t seq,
		   const struct prepared_segment *p, struct apply_result *ret, char *msg,
		   size_t msgsize)
{
	struct applier a = {
		.vault = v,
		.cat = ferry_vault_catalog(v),
		.msg = msg,
		.msgsize = msgsize,
	};
	msg[0] = 0;
	const struct ferry_segment *seg = p->seg;

	/* One read transaction from the first read to the last dedup look-up:
	 * the reads see one state, and thousands of look-ups take no lock
	 * each. The commit is the ingest's own transaction (ingest.h). */
	int r = ferry_catalog_begin_read(a.cat);
	if (r >= 0)
		r = ferry_catalog_vm_get(a.cat, vm_name, &a.vm);
	if (r >= 0)
		r = ferry_catalog_disk_list(a.cat, a.vm.id, load_disk, &a);
	if (r >= 0)
		r = ferry_catalog_point_list(a.cat, a.vm.id, note_point, &a);
	if (r < 0) {
		ferry_catalog_rollback(a.cat);
		return fail(&a, r, "cannot read VM '%s' from the catalog", vm_name);
	}
	struct commit_ctx cc = { &a, ferry_segment_info(seg), a.vm.applied_seq, a.vm.state };
	if (a.vm.state == FERRY_VM_ERROR)
		a.vm.state = a.vm.marker_seq ? FERRY_VM_PROTECTED : FERRY_VM_INITIAL;
	r = chain_start(&a);
	if (r < 0) {
		ferry_catalog_rollback(a.cat);
		return fail(&a, r, "cannot read the resync of VM '%s' from the catalog", vm_name);
	}
	a.result.seq = ferry_segment_info(seg)->seq;
	r = check_chain(&a, seq, ferry_segment_info(seg));
	if (r < 0 || a.result.already_applied) {
		ferry_catalog_rollback(a.cat);
		if (r >= 0)
			*ret = a.result;
		return r;
	}

	if (a.vm.initial_total_bytes == 0)
		for (size_t i = 0; i < a.ndisks; i++)
			a.vm.initial_total_bytes += a.disks[i].disk.size;

	a.seg_digest = ferry_segment_info(seg)->digest;
	r = ferry_ingest_new(v, &a.ingest);
	if (r >= 0)
		r = apply_records(&a, p);
	if (r >= 0 && a.vm.initial_total_bytes == 0)
		for (size_t i = 0; i < a.ndisks; i++)
			a.vm.initial_total_bytes += a.disks[i].disk.size;
	if (r >= 0)
		r = add_state(&a, ferry_segment_info(seg));
	ferry_catalog_rollback(a.cat); /* the end of the reads */
	if (r >= 0) {
		r = ferry_ingest_commit(a.ingest, commit_rows, &cc);
		/* Somebody moved the VM, or GC took an object reused here, since
		 * the reads, or the catalog stayed locked: nothing is wrong with
		 * the segment. */
		if (r == -ESTALE || r == -EBUSY)
			r = fail(
				&a, -EAGAIN,
				"VM '%s' changed while segment %llu was applied; it is tried again",
				vm_name, (unsigned long long)cc.info->seq);
		else if (r < 0)
			fail(&a, r, "cannot commit segment %llu to the store and catalog",
			     (unsigned long long)cc.info->seq);
	}
	if (r >= 0) {
		a.result.stored_bytes = ferry_ingest_stored_bytes(a.ingest);
		a.result.points = (unsigned)a.npoints;
		*ret = a.result;
	}
	applier_done(&a);
	return r;
}

int apply_segment(struct ferry_vault *v, const char *vm_name, uint64_t seq, const void *buf,
		  size_t len, struct apply_result *ret, char *msg, size_t msgsize)
{
	_cleanup_(apply_prepared_freep) struct prepared_segment *p = NULL;
	msg[0] = 0;
	int r = apply_prepare(v, buf, len, &p, msg, msgsize);
	return r < 0 ? r : apply_prepared(v, vm_name, seq, p, ret, msg, msgsize);
}
