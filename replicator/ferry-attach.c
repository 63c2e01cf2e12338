/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * ferry attach: rebuilds a vault's catalog on a fresh host from its store
 * alone. The store is the truth: every pack carries its own index, and the
 * records (records.h: VAULT, VM, STATE, POINT) say which VMs exist, where
 * each one's chain stands and which map roots are recovery points. Also the
 * writers of the VAULT and VM records that ferry init and ferry
 * enable-replication call (the replicator writes STATE and POINT records in
 * apply.c).
 *
 * The store is read completely and checked before anything is created, so
 * a refused attach leaves NEWDIR as it was; a failure after creation
 * removes what attach made.
 */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "env.h"
#include "ferry/catalog.h"
#include "ferry/log.h"
#include "ferry/records.h"
#include "ferry/store.h"
#include "ferry/util.h"
#include "ferry/vault.h"
#include "maint.h"

/* ---- writing VAULT and VM records ---- */

static int name_vault_record(struct ferry_catalog *c, void *userdata)
{
	char hex[FERRY_ID_HEX_SIZE];
	return ferry_catalog_set_setting(c, "vault_record", ferry_id_to_hex(userdata, hex));
}

/* The vault's VAULT record, named by the vault_record setting. */
static int record_vault_write(struct ferry_vault *v)
{
	struct ferry_catalog *c = ferry_vault_catalog(v);
	struct ferry_record_vault rec = { .chunk_size = ferry_vault_chunk_size(v) };
	char created[32];
	int r = ferry_catalog_get_setting(c, "vault_id", rec.vault_id, sizeof(rec.vault_id));
	if (r >= 0)
		r = ferry_catalog_get_setting(c, "created_ns", created, sizeof(created));
	if (r < 0)
		return r;
	rec.created_ns = strtoll(created, NULL, 10);
	_cleanup_free_ char *buf = NULL;
	size_t len;
	struct ferry_id id;
	r = ferry_record_vault_encode(&rec, &buf, &len);
	return r < 0 ? r :
		       ferry_record_store(v, FERRY_OBJ_VAULT, buf, len, &id, name_vault_record,
					  &id);
}

int record_vault_init(const char *dir)
{
	_cleanup_(ferry_vault_freep) struct ferry_vault *v = NULL;
	int r = ferry_vault_open(dir, 0, &v);
	return r < 0 ? r : record_vault_write(v);
}

struct vm_rec_ctx {
	struct ferry_record_vm rec;
	size_t adisks, ares;
};

static int vm_rec_disk(const struct ferry_disk *d, void *userdata)
{
	struct vm_rec_ctx *x = userdata;
	if (x->rec.ndisks == FERRY_RECORD_MAX_DISKS)
		return -E2BIG;
	struct ferry_disk *n = realloc(x->rec.disks, (x->rec.ndisks + 1) * sizeof(*n));
	if (!n)
		return -ENOMEM;
	x->rec.disks = n;
	n[x->rec.ndisks] = (struct ferry_disk){ .idx = d->idx };
	memcpy(n[x->rec.ndisks].name, d->name, sizeof(d->name));
	memcpy(n[x->rec.ndisks].source_path, d->source_path, sizeof(d->source_path));
	x->rec.ndisks++;
	return 0;
}

static int vm_rec_resource(const char *kind, const char *value, void *userdata)
{
	struct vm_rec_ctx *x = userdata;
	if (x->rec.nresources == FERRY_RECORD_MAX_RESOURCES || strlen(kind) > FERRY_NAME_MAX ||
	    strlen(value) >= FERRY_PATH_MAX)
		return -E2BIG;
	struct ferry_record_resource *n =
		realloc(x->rec.resources, (x->rec.nresources + 1) * sizeof(*n));
	if (!n)
		return -ENOMEM;
	x->rec.resources = n;
	snprintf(n[x->rec.nresources].kind, sizeof(n->kind), "%s", kind);
	snprintf(n[x->rec.nresources].value, sizeof(n->value), "%s", value);
	x->rec.nresources++;
	return 0;
}

struct vm_rec_name {
	int64_t vm_id;
	struct ferry_id record;
};

/* The VM as it is at the commit, naming its new record. */
static int name_vm_record(struct ferry_catalog *c, void *userdata)
{
	struct vm_rec_name *n = userdata;
	struct ferry_vm vm;
	int r = ferry_catalog_vm_get_by_id(c, n->vm_id, &vm);
	if (r < 0)
		return r;
	vm.record = n->record;
	return ferry_catalog_vm_update(c, &vm);
}

int record_vm_write(struct ferry_vault *v, int64_t vm_id)
{
	struct ferry_catalog *c = ferry_vault_catalog(v);
	struct ferry_vm vm;
	int r = ferry_catalog_vm_get_by_id(c, vm_id, &vm);
	if (r < 0)
		return r;
	struct vm_rec_ctx x = { .rec = {
					.created_ns = vm.created_ns,
					.written_ns = ferry_now_ns(),
					.crash_interval_s = vm.crash_interval_s,
					.app_interval_s = vm.app_interval_s,
					.retention_s = vm.retention_s,
				} };
	memcpy(x.rec.name, vm.name, sizeof(x.rec.name));
	memcpy(x.rec.cache_url, vm.cache_url, sizeof(x.rec.cache_url));
	r = ferry_catalog_disk_list(c, vm_id, vm_rec_disk, &x);
	if (r >= 0)
		r = ferry_catalog_resource_list(c, vm_id, vm_rec_resource, &x);
	_cleanup_free_ char *buf = NULL;
	size_t len;
	if (r >= 0)
		r = ferry_record_vm_encode(&x.rec, &buf, &len);
	ferry_record_vm_done(&x.rec);
	struct vm_rec_name n = { vm_id };
	return r < 0 ? r :
		       ferry_record_store(v, FERRY_OBJ_VM, buf, len, &n.record, name_vm_record, &n);
}

/* ---- reading the store ---- */

struct object {
	struct ferry_id id;
	struct ferry_loc loc;
};

struct pack {
	uint64_t id, file_size;
	uint32_t count;
	int damaged;
};

struct vm_entry {
	struct ferry_record_vm vm;
	struct ferry_id vm_id;
	struct ferry_record_state state;
	struct ferry_id state_id;
	int has_state;
};

struct point_entry {
	struct ferry_record_point p;
	struct ferry_id id;
};

struct scan {
	struct ferry_store *store;
	struct pack *packs;
	size_t npacks;
	struct object *objects;
	size_t nobjects, aobjects;
	struct object *records;
	size_t nrecords;
	size_t cur_first; /* objects of the pack being indexed start here */

	struct ferry_record_vault vault;
	struct ferry_id vault_id;
	int has_vault;
	struct vm_entry *vms;
	size_t nvms;
	struct point_entry *points;
	size_t npoints;
	unsigned damage;
};

static void scan_done(struct scan *s)
{
	for (size_t i = 0; i < s->nvms; i++) {
		ferry_record_vm_done(&s->vms[i].vm);
		ferry_record_state_done(&s->vms[i].state);
	}
	for (size_t i = 0; i < s->npoints; i++)
		ferry_record_point_done(&s->points[i].p);
	free(s->vms);
	free(s->points);
	free(s->packs);
	free(s->objects);
	free(s->records);
	ferry_store_free(s->store);
}

static int list_pack(uint64_t pack, uint64_t size, void *userdata)
{
	struct scan *s = userdata;
	struct pack *n = realloc(s->packs, (s->npacks + 1) * sizeof(*n));
	if (!n)
		return -ENOMEM;
	s->packs = n;
	s->packs[s->npacks++] = (struct pack){ .id = pack, .file_size = size };
	return 0;
}

static int index_object(const struct ferry_id *id, const struct ferry_loc *loc, void *userdata)
{
	struct scan *s = userdata;
	if (s->nobjects == s->aobjects) {
		size_t n = s->aobjects ? s->aobjects * 2 : 4096;
		struct object *o = realloc(s->objects, n * sizeof(*o));
		if (!o)
			return -ENOMEM;
		s->objects = o;
		s->aobjects = n;
	}
	s->objects[s->nobjects++] = (struct object){ *id, *loc };
	return 0;
}

static int index_packs(struct scan *s)
{
	for (size_t i = 0; i < s->npacks; i++) {
		struct pack *p = &s->packs[i];
		size_t first = s->nobjects;
		int r = ferry_store_pack_index(s->store, p->id, 0, index_object, s);
		if (r == -EBADMSG || r == -ENOENT) {
			/* A pack never yields a partial listing, but drop what
			 * the callback saw before the damage was found. */
			s->nobjects = first;
			p->damaged = 1;
			s->damage++;
			log_error("pack %016llx is %s; its objects are not indexed",
				  (unsigned long long)p->id, r == -ENOENT ? "gone" : "damaged");
			continue;
		}
		if (r < 0)
			return log_error_errno(r, "cannot read the index of pack %016llx",
					       (unsigned long long)p->id);
		p->count = (uint32_t)(s->nobjects - first);
	}
	return 0;
}

static int read_object(struct scan *s, const struct object *o, void **ret, size_t *ret_len)
{
	_cleanup_free_ void *buf = malloc(o->loc.plen + 1);
	if (!buf)
		return -ENOMEM;
	int r = ferry_store_read(s->store, &o->loc, &o->id, buf, o->loc.plen);
	if (r < 0)
		return r;
	*ret = TAKE_PTR(buf);
	*ret_len = o->loc.plen;
	return 0;
}

static struct vm_entry *find_vm(struct scan *s, const char *name)
{
	for (size_t i = 0; i < s->nvms; i++)
		if (strcmp(s->vms[i].vm.name, name) == 0)
			return &s->vms[i];
	return NULL;
}

static int take_vault(struct scan *s, const struct object *o, const void *buf, size_t len)
{
	struct ferry_record_vault v;
	int r = ferry_record_vault_decode(buf, len, &v);
	if (r < 0)
		return r;
	if (s->has_vault && ferry_id_equal(&s->vault_id, &o->id))
		return 0;
	if (s->has_vault) {
		log_error("the store holds records of two vaults (%s and %s)", s->vault.vault_id,
			  v.vault_id);
		return -EBADE;
	}
	s->vault = v;
	s->vault_id = o->id;
	s->has_vault = 1;
	return 0;
}

static int take_vm(struct scan *s, const struct object *o, const void *buf, size_t len)
{
	struct ferry_record_vm v;
	int r = ferry_record_vm_decode(buf, len, &v);
	if (r < 0)
		return r;
	struct vm_entry *e = find_vm(s, v.name);
	if (e) {
		/* The newest settings of the newest incarnation win. */
		if (v.created_ns < e->vm.created_ns ||
		    (v.created_ns == e->vm.created_ns && v.written_ns <= e->vm.written_ns)) {
			ferry_record_vm_done(&v);
			return 0;
		}
		ferry_record_vm_done(&e->vm);
	} else {
		struct vm_entry *n = realloc(s->vms, (s->nvms + 1) * sizeof(*n));
		if (!n) {
			ferry_record_vm_done(&v);
			return -ENOMEM;
		}
		s->vms = n;
		e = &s->vms[s->nvms++];
		memset(e, 0, sizeof(*e));
	}
	e->vm = v;
	e->vm_id = o->id;
	return 0;
}

static int take_point(struct scan *s, const struct object *o, const void *buf, size_t len)
{
	struct ferry_record_point p;
	int r = ferry_record_point_decode(buf, len, &p);
	if (r < 0)
		return r;
	for (size_t i = 0; i < s->npoints; i++)
		if (ferry_id_equal(&s->points[i].id, &o->id)) {
			ferry_record_point_done(&p);
			return 0;
		}
	struct point_entry *n = realloc(s->points, (s->npoints + 1) * sizeof(*n));
	if (!n) {
		ferry_record_point_done(&p);
		return -ENOMEM;
	}
	s->points = n;
	s->points[s->npoints++] = (struct point_entry){ p, o->id };
	return 0;
}

/* STATE records are matched to VMs after all VM records are known. */
static int take_state(struct scan *s, const struct object *o, const void *buf, size_t len)
{
	struct ferry_record_state st;
	int r = ferry_record_state_decode(buf, len, &st);
	if (r < 0)
		return r;
	struct vm_entry *e = find_vm(s, st.vm);
	if (!e || e->vm.created_ns != st.vm_created_ns ||
	    (e->has_state && st.applied_seq <= e->state.applied_seq)) {
		ferry_record_state_done(&st);
		return 0;
	}
	ferry_record_state_done(&e->state);
	e->state = st;
	e->state_id = o->id;
	e->has_state = 1;
	return 0;
}

static int read_records(struct scan *s)
{
	/* VAULT and VM records first, then STATE and POINT records that
	 * refer to them. */
	static const uint8_t order[] = { FERRY_OBJ_VAULT, FERRY_OBJ_VM, FERRY_OBJ_STATE,
					 FERRY_OBJ_POINT };
	for (size_t k = 0; k < ARRAY_SIZE(order); k++)
		for (size_t i = 0; i < s->nobjects; i++) {
			const struct object *o = &s->objects[i];
			if (o->loc.type != order[k])
				continue;
			_cleanup_free_ void *buf = NULL;
			size_t len;
			int r = read_object(s, o, &buf, &len);
			if (r >= 0)
				switch (o->loc.type) {
				case FERRY_OBJ_VAULT:
					r = take_vault(s, o, buf, len);
					break;
				case FERRY_OBJ_VM:
					r = take_vm(s, o, buf, len);
					break;
				case FERRY_OBJ_STATE:
					r = take_state(s, o, buf, len);
					break;
				default:
					r = take_point(s, o, buf, len);
				}
			if (r == -EBADE)
				return r;
			if (r == -EBADMSG || r == -EPROTONOSUPPORT || r == -ENOENT) {
				char hex[FERRY_ID_HEX_SIZE];
				log_error("record %s in pack %016llx is %s",
					  ferry_id_to_hex(&o->id, hex),
					  (unsigned long long)o->loc.pack,
					  r == -EPROTONOSUPPORT ? "of an unknown major version" :
								  "damaged");
				s->damage++;
				continue;
			}
			if (r < 0)
				return log_error_errno(r, "cannot read record in pack %016llx",
						       (unsigned long long)o->loc.pack);
		}
	return 0;
}

/* ---- building the catalog ---- */

static int cmp_point(const void *a, const void *b)
{
	const struct ferry_record_point *x = &((const struct point_entry *)a)->p,
					*y = &((const struct point_entry *)b)->p;
	if (x->time_ns != y->time_ns)
		return x->time_ns < y->time_ns ? -1 : 1;
	if (x->seq != y->seq)
		return x->seq < y->seq ? -1 : 1;
	return strcmp(x->name, y->name);
}

static int add_vm(struct ferry_catalog *c, struct vm_entry *e, unsigned *ret_points, struct scan *s)
{
	const struct ferry_record_vm *rv = &e->vm;
	const struct ferry_record_state *st = e->has_state ? &e->state : NULL;
	if (st && st->ndisks != rv->ndisks) {
		log_error("VM '%s': its newest state record has %zu disks, its settings %zu; "
			  "ignoring the state",
			  rv->name, st->ndisks, rv->ndisks);
		s->damage++;
		st = NULL;
	}
	struct ferry_vm vm = {
		.state = st ? (enum ferry_vm_state)st->state : FERRY_VM_INITIAL,
		.crash_interval_s = rv->crash_interval_s,
		.app_interval_s = rv->app_interval_s,
		.retention_s = rv->retention_s,
		.created_ns = rv->created_ns,
		.record = e->vm_id,
	};
	memcpy(vm.name, rv->name, sizeof(vm.name));
	memcpy(vm.cache_url, rv->cache_url, sizeof(vm.cache_url));
	if (st) {
		vm.applied_seq = st->applied_seq;
		vm.applied_digest = st->applied_digest;
		vm.marker_seq = st->marker_seq;
		vm.marker_ns = st->marker_ns;
		vm.initial_done_bytes = st->initial_done;
		vm.initial_total_bytes = st->initial_total;
		vm.state_record = e->state_id;
	}
	int r = ferry_catalog_vm_add(c, &vm);
	if (r >= 0)
		r = ferry_catalog_vm_update(c, &vm);
	for (size_t i = 0; r >= 0 && i < rv->ndisks; i++) {
		struct ferry_disk d = rv->disks[i];
		d.vm_id = vm.id;
		if (st) {
			d.size = st->disks[i].size;
			d.live_root = st->disks[i].live_root;
			d.work_root = st->disks[i].work_root;
		}
		r = ferry_catalog_disk_add(c, &d);
	}
	for (size_t i = 0; r >= 0 && i < rv->nresources; i++)
		r = ferry_catalog_resource_set(c, vm.id, rv->resources[i].kind,
					       rv->resources[i].value);
	if (r < 0)
		return log_error_errno(r, "cannot add VM '%s' to the catalog", rv->name);

	unsigned n = 0;
	for (size_t i = 0; i < s->npoints; i++) {
		struct point_entry *pe = &s->points[i];
		const struct ferry_record_point *rp = &pe->p;
		if (strcmp(rp->vm, rv->name) != 0 || rp->vm_created_ns != rv->created_ns)
			continue;
		/* A point past the applied state comes from an apply that
		 * never committed (its pack is an orphan): it never was. */
		if (!st || rp->seq > st->applied_seq)
			continue;
		struct ferry_point p = {
			.vm_id = vm.id,
			.time_ns = rp->time_ns,
			.consistency = rp->consistency,
			.seq = rp->seq,
			.record = pe->id,
			.group_round = rp->group_round,
		};
		memcpy(p.name, rp->name, sizeof(p.name));
		r = ferry_catalog_point_add(c, &p, rp->disks, rp->ndisks);
		if (r == -EEXIST) {
			log_warning("VM '%s': two records for recovery point %s; keeping the first",
				    rv->name, rp->name);
			continue;
		}
		if (r < 0)
			return log_error_errno(r, "cannot add recovery point %s of VM '%s'",
					       rp->name, rv->name);
		n++;
	}
	char ev[160];
	snprintf(ev, sizeof(ev),
		 "catalog rebuilt from the store by ferry attach: %u recovery point%s, applied "
		 "segment %llu",
		 n, n == 1 ? "" : "s", (unsigned long long)vm.applied_seq);
	r = ferry_catalog_event_add(c, vm.id, "info", ev);
	if (r < 0)
		return r;
	*ret_points += n;
	return 0;
}

static int build_catalog(struct ferry_vault *v, struct scan *s, unsigned *ret_points)
{
	struct ferry_catalog *c = ferry_vault_catalog(v);
	char created[32], hex[FERRY_ID_HEX_SIZE];
	snprintf(created, sizeof(created), "%lld", (long long)s->vault.created_ns);
	int r = ferry_catalog_begin(c);
	if (r < 0)
		return r;
	r = ferry_catalog_set_setting(c, "vault_id", s->vault.vault_id);
	if (r >= 0)
		r = ferry_catalog_set_setting(c, "created_ns", created);
	if (r >= 0)
		r = ferry_catalog_set_setting(c, "vault_record",
					      ferry_id_to_hex(&s->vault_id, hex));
	for (size_t i = 0; r >= 0 && i < s->npacks; i++) {
		const struct pack *p = &s->packs[i];
		if (p->damaged)
			continue;
		/* The catalog counts header and entries: the index_offset. */
		r = ferry_catalog_pack_add(c, p->id, p->file_size - 56ull * p->count - 64, p->count,
					   0);
	}
	for (size_t i = 0; r >= 0 && i < s->nobjects; i++)
		r = ferry_catalog_object_put(c, &s->objects[i].id, &s->objects[i].loc);
	if (r >= 0)
		qsort(s->points, s->npoints, sizeof(*s->points), cmp_point);
	for (size_t i = 0; r >= 0 && i < s->nvms; i++)
		r = add_vm(c, &s->vms[i], ret_points, s);
	if (r >= 0)
		r = ferry_catalog_event_add(c, 0, "info", "catalog rebuilt from the store");
	if (r < 0) {
		ferry_catalog_rollback(c);
		return r;
	}
	return ferry_catalog_commit(c);
}

/* ---- the verb ---- */

/* 1: absent or empty, 0: has entries, -errno. */
static int dir_unused(const char *dir, int *ret_existed)
{
	DIR *d = opendir(dir);
	if (!d) {
		*ret_existed = 0;
		return errno == ENOENT ? 1 : -errno;
	}
	*ret_existed = 1;
	struct dirent *de;
	int empty = 1;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			empty = 0;
	closedir(d);
	return empty;
}

static const char attach_help[] =
	"Usage: ferry attach --vault NEWDIR --store URL [--force]\n"
	"\n"
	"Rebuilds a vault's catalog in NEWDIR (absent or empty) from its store alone:\n"
	"packs and objects from the packs' own indexes, VMs, disks, resources, live\n"
	"state and recovery points from the records in the store. Then retention\n"
	"thinning runs once. The store is only read.\n"
	"\n"
	"  --store URL   the vault's store: a directory, azblob://CONTAINER[/PREFIX]\n"
	"                or s3://BUCKET[/PREFIX]\n"
	"  --force       attach even if some packs or records are damaged: what they\n"
	"                held is left out (ferry check then reports what is missing)\n";

int cmd_attach(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "vault", required_argument, NULL, 'V' },
		{ "store", required_argument, NULL, 's' },
		{ "force", no_argument, NULL, 'f' },
		{ "help", no_argument, NULL, 'h' },
		{},
	};
	const char *dir = NULL, *store = NULL;
	int force = 0, c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) >= 0) {
		switch (c) {
		case 'V':
			dir = optarg;
			break;
		case 's':
			store = optarg;
			break;
		case 'f':
			force = 1;
			break;
		case 'h':
			fputs(attach_help, stdout);
			return 0;
		default:
			return 2;
		}
	}
	if (!dir || !store || optind != argc) {
		log_error("usage: ferry attach --vault NEWDIR --store URL [--force]");
		return 2;
	}
	int existed;
	int r = dir_unused(dir, &existed);
	if (r < 0)
		return log_error_errno(r, "cannot read %s", dir), 1;
	if (r == 0)
		return log_error("%s exists and is not empty; attach needs a new directory", dir),
		       1;

	_cleanup_free_ char *url = strstr(store, "://") ? strdup(store) : absolute(store);
	if (!url)
		return log_error("out of memory"), 1;
	if (strlen(url) >= FERRY_URL_MAX)
		return log_error("store URL is too long"), 1;

	struct scan s = { 0 };
	r = ferry_store_open(url, 0, &s.store);
	if (r < 0) {
		log_error("cannot open store %s: %s", url, env_blobs_strerror(r));
		return 1;
	}
	r = ferry_store_list_packs(s.store, list_pack, &s);
	if (r < 0) {
		log_error("cannot list the packs of store %s: %s", url, env_blobs_strerror(r));
		scan_done(&s);
		return 1;
	}
	if (r >= 0)
		r = index_packs(&s);
	if (r >= 0)
		r = read_records(&s);
	if (r < 0) {
		scan_done(&s);
		return 1;
	}
	if (!s.has_vault) {
		log_error("store %s holds no vault record: not a ferry store, or one made before "
			  "stores described themselves",
			  url);
		scan_done(&s);
		return 1;
	}
	if (s.damage && !force) {
		log_error("store %s: %u damaged pack%s or record%s (see above); nothing attached. "
			  "--force attaches what is intact",
			  url, s.damage, s.damage == 1 ? "" : "s", s.damage == 1 ? "" : "s");
		scan_done(&s);
		return 1;
	}

	r = ferry_vault_create(dir, s.vault.chunk_size, url);
	if (r < 0) {
		log_error("cannot create vault %s: %s", dir, env_blobs_strerror(r));
		scan_done(&s);
		return 1;
	}
	unsigned points = 0, thinned = 0;
	_cleanup_(ferry_vault_freep) struct ferry_vault *v = NULL;
	r = ferry_vault_open(dir, 0, &v);
	if (r >= 0)
		r = build_catalog(v, &s, &points);
	/* Points thinned but not yet collected are still in the store:
	 * thinning again removes them. */
	if (r >= 0)
		r = maint_thin(v, ferry_now_ns(), &thinned);
	if (r < 0) {
		log_error_errno(r, "cannot attach store %s in %s", url, dir);
		v = ferry_vault_free(v);
		undo_vault_dir(dir, existed);
		scan_done(&s);
		return 1;
	}
	size_t npacks = 0;
	for (size_t i = 0; i < s.npacks; i++)
		npacks += !s.packs[i].damaged;
	printf("Attached store %s as vault %s: %zu VM%s, %u recovery point%s, %zu pack%s, %zu "
	       "objects\n",
	       url, dir, s.nvms, s.nvms == 1 ? "" : "s", points - thinned,
	       points - thinned == 1 ? "" : "s", npacks, npacks == 1 ? "" : "s", s.nobjects);
	if (s.damage)
		printf("%u damaged pack%s or record%s left out (--force)\n", s.damage,
		       s.damage == 1 ? "" : "s", s.damage == 1 ? "" : "s");
	scan_done(&s);
	return s.damage ? 1 : 0;
}
