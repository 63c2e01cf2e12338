/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Catalog round trips: settings, VMs, resources, disks with live maps,
 * recovery points with unique names and group rounds, the VMs of a group,
 * the object index, events, migrations from versions 2 and 3, and the
 * refusal of a newer schema or a file that is not a catalog.
 */
#include "ferry/catalog.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ferry/util.h"
#include "tap.h"

static int count_cb(const struct ferry_point *p, void *userdata)
{
	(*(int *)userdata)++;
	return 0;
}

/* Sums the group rounds of the points listed. */
static int round_cb(const struct ferry_point *p, void *userdata)
{
	(*(uint64_t *)userdata) += p->group_round;
	return 0;
}

/* Appends the VM's name to a comma-separated list. */
static int name_cb(const struct ferry_vm *vm, void *userdata)
{
	char *list = userdata;
	if (*list)
		strcat(list, ",");
	strcat(list, vm->name);
	return 0;
}

static int disk_cb(const struct ferry_point_disk *d, void *userdata)
{
	(*(uint64_t *)userdata) += d->size;
	return 0;
}

int main(void)
{
	char dir[] = "/tmp/ferry-test-catalog-XXXXXX";
	if (!mkdtemp(dir))
		return 1;
	char path[256];
	snprintf(path, sizeof(path), "%s/catalog.db", dir);

	ok_r(ferry_catalog_create(path, 65536, "/x/store"), "create");
	ok(ferry_catalog_create(path, 65536, "/x/store") == -EEXIST, "create twice is -EEXIST");

	struct ferry_catalog *c;
	ok_r(ferry_catalog_open(path, 0, &c), "open");
	char buf[256];
	ok_r(ferry_catalog_get_setting(c, "chunk_size", buf, sizeof(buf)), "get chunk_size");
	ok(strcmp(buf, "65536") == 0, "chunk_size round trip");
	ok(ferry_catalog_get_setting(c, "nope", buf, sizeof(buf)) == -ENOENT, "missing setting");

	struct ferry_vm vm = { .state = FERRY_VM_INITIAL,
			       .crash_interval_s = 300,
			       .retention_s = 86400,
			       .created_ns = 1 };
	snprintf(vm.name, sizeof(vm.name), "web1");
	snprintf(vm.cache_url, sizeof(vm.cache_url), "/x/cache");
	ok_r(ferry_catalog_vm_add(c, &vm), "vm add");
	ok(vm.id > 0, "vm id assigned");
	struct ferry_vm dup = vm;
	ok(ferry_catalog_vm_add(c, &dup) == -EEXIST, "duplicate vm name is -EEXIST");

	vm.applied_seq = 7;
	vm.applied_digest.b[3] = 9;
	vm.state = FERRY_VM_PROTECTED;
	ok_r(ferry_catalog_vm_update(c, &vm), "vm update");
	struct ferry_vm got;
	ok_r(ferry_catalog_vm_get(c, "web1", &got), "vm get");
	ok(got.applied_seq == 7 && ferry_id_equal(&got.applied_digest, &vm.applied_digest) &&
		   got.state == FERRY_VM_PROTECTED && got.crash_interval_s == 300,
	   "vm fields round trip");
	ok(ferry_catalog_vm_get(c, "nope", &got) == -ENOENT, "unknown vm is -ENOENT");

	ok_r(ferry_catalog_resource_set(c, vm.id, "target-group", "rg-ferry"), "resource set");
	ok_r(ferry_catalog_resource_set(c, vm.id, "target-group", "rg2"), "resource replace");
	ok_r(ferry_catalog_resource_get(c, vm.id, "target-group", buf, sizeof(buf)),
	     "resource get");
	ok(strcmp(buf, "rg2") == 0, "resource value replaced");

	struct ferry_disk d = { .vm_id = vm.id, .idx = 0, .size = 1 << 20 };
	snprintf(d.name, sizeof(d.name), "os");
	snprintf(d.source_path, sizeof(d.source_path), "/dev/x");
	ok_r(ferry_catalog_disk_add(c, &d), "disk add");
	d.live_root.b[0] = 1;
	d.work_root.b[0] = 2;
	ok_r(ferry_catalog_disk_update(c, &d), "disk update");
	struct ferry_disk gd;
	ok_r(ferry_catalog_disk_get(c, vm.id, "os", &gd), "disk get");
	ok(ferry_id_equal(&gd.live_root, &d.live_root) &&
		   ferry_id_equal(&gd.work_root, &d.work_root),
	   "disk roots round trip");

	ok_r(ferry_catalog_begin(c), "begin");
	struct ferry_point_disk pd = { .idx = 0, .size = 4096 };
	snprintf(pd.name, sizeof(pd.name), "os");
	struct ferry_point p1 = {
		.vm_id = vm.id, .time_ns = 1795757400000000000LL, .consistency = 1, .seq = 3
	};
	struct ferry_point p2 = p1, p3 = p1;
	ok_r(ferry_catalog_point_add(c, &p1, &pd, 1), "point add");
	ok_r(ferry_catalog_point_add(c, &p2, &pd, 1), "point add same second");
	ok_r(ferry_catalog_commit(c), "commit");
	ok(strcmp(p1.name, "20261127T053000Z") == 0, "point name is ISO 8601 basic (%s)", p1.name);
	ok(strcmp(p2.name, "20261127T053000Z-0002") == 0, "second point gets a suffix (%s)",
	   p2.name);
	ferry_catalog_begin(c);
	ok_r(ferry_catalog_point_add(c, &p3, &pd, 1), "point add inside rolled back tx");
	ferry_catalog_rollback(c);
	int n = 0;
	ok_r(ferry_catalog_point_list(c, vm.id, count_cb, &n), "point list");
	ok(n == 2, "rollback dropped the third point");
	uint64_t total = 0;
	ok_r(ferry_catalog_point_disks(c, p1.id, disk_cb, &total), "point disks");
	ok(total == 4096, "point disk size");
	ok_r(ferry_catalog_point_delete(c, p1.id), "point delete");
	ok(ferry_catalog_point_delete(c, p1.id) == -ENOENT, "point delete twice is -ENOENT");

	/* Group points (schema 4): the round comes back; ordinary points say 0. */
	struct ferry_point p4 = p1;
	p4.id = 0;
	p4.name[0] = 0;
	p4.time_ns += 60000000000LL;
	p4.group_round = 29929290;
	struct ferry_point p5 = p4;
	p5.group_round = (uint64_t)INT64_MAX + 1;
	ok(ferry_catalog_point_add(c, &p5, &pd, 1) == -EINVAL,
	   "a group round past 2^63 - 1 is refused");
	ok_r(ferry_catalog_point_add(c, &p4, &pd, 1), "group point add");
	uint64_t rounds = 0;
	ok(ferry_catalog_point_list(c, vm.id, round_cb, &rounds) == 0 && rounds == 29929290,
	   "group round round trip, ordinary points 0");

	/* The members of a group: VMs with resource group = its name. */
	struct ferry_vm m2 = vm, m3 = vm;
	snprintf(m2.name, sizeof(m2.name), "db1");
	snprintf(m3.name, sizeof(m3.name), "other");
	ok(ferry_catalog_vm_add(c, &m2) == 0 && ferry_catalog_vm_add(c, &m3) == 0, "two more VMs");
	ok(ferry_catalog_resource_set(c, vm.id, "group", "shop") == 0 &&
		   ferry_catalog_resource_set(c, m2.id, "group", "shop") == 0 &&
		   ferry_catalog_resource_set(c, m3.id, "group", "shop2") == 0 &&
		   ferry_catalog_resource_set(c, m3.id, "target-group", "shop") == 0,
	   "group resources");
	char members[256] = "";
	ok(ferry_catalog_vm_list_by_resource(c, "group", "shop", name_cb, members) == 0 &&
		   strcmp(members, "db1,web1") == 0,
	   "group shop lists its members in name order (%s)", members);
	members[0] = 0;
	ok(ferry_catalog_vm_list_by_resource(c, "group", "none", name_cb, members) == 0 &&
		   !members[0],
	   "a group without members lists none");

	struct ferry_id oid = { { 1, 2, 3 } };
	struct ferry_loc loc = { .pack = UINT64_MAX - 5,
				 .offset = 77,
				 .clen = 10,
				 .plen = 4096,
				 .type = 1 },
			 gl;
	ok_r(ferry_catalog_object_put(c, &oid, &loc), "object put");
	struct ferry_loc other = loc;
	other.offset = 99;
	ok_r(ferry_catalog_object_put(c, &oid, &other), "object put again");
	ok_r(ferry_catalog_object_get(c, &oid, &gl), "object get");
	ok(gl.pack == loc.pack && gl.offset == 77 && gl.plen == 4096, "first location kept, "
								      "64-bit pack id survives");
	ok_r(ferry_catalog_pack_add(c, loc.pack, 1000, 1, 0), "pack add");
	uint64_t bytes;
	ok_r(ferry_catalog_store_bytes(c, &bytes), "store bytes");
	ok(bytes == 1000, "store bytes sums packs");
	ok_r(ferry_catalog_pack_delete(c, loc.pack), "pack delete");
	ok(ferry_catalog_object_get(c, &oid, &gl) == -ENOENT, "pack delete drops its objects");

	ok_r(ferry_catalog_event_add(c, vm.id, "info", "hello"), "event add");
	uint64_t g1, g2;
	ok_r(ferry_catalog_generation(c, &g1), "generation");
	ferry_catalog_begin(c);
	ferry_catalog_event_add(c, vm.id, "info", "again");
	ferry_catalog_commit(c);
	ferry_catalog_generation(c, &g2);
	ok(g1 != g2, "generation moves on commit");

	/* Resyncs (schema 3): one row per VM, replaced by the next. */
	struct ferry_vm_resync rs = { .vm_id = vm.id,
				      .epoch = 1,
				      .base_seq = 16777223,
				      .requested_ns = 5 },
			       grs;
	memset(rs.base_digest.b, 7, sizeof(rs.base_digest.b));
	snprintf(rs.reason, sizeof(rs.reason), "segment 8 refused");
	ok(ferry_catalog_resync_get(c, vm.id, &grs) == -ENOENT, "no resync yet");
	ok_r(ferry_catalog_resync_set(c, &rs), "resync set");
	ok(ferry_catalog_resync_get(c, vm.id, &grs) == 0 && grs.epoch == 1 &&
		   grs.base_seq == 16777223 && ferry_id_equal(&grs.base_digest, &rs.base_digest) &&
		   grs.requested_ns == 5 && grs.done_ns == 0 &&
		   strcmp(grs.reason, "segment 8 refused") == 0,
	   "resync round trip");
	rs.epoch = 2;
	rs.done_ns = 9;
	ok(ferry_catalog_resync_set(c, &rs) == 0 && ferry_catalog_resync_get(c, vm.id, &grs) == 0 &&
		   grs.epoch == 2 && grs.done_ns == 9,
	   "the next resync replaces it");
	ok(strcmp(ferry_vm_state_name(FERRY_VM_RESYNC_REQUIRED), "resync-required") == 0 &&
		   strcmp(ferry_vm_state_name(FERRY_VM_RESYNCING), "resyncing") == 0,
	   "resync state names");
	ferry_catalog_free(c);

	/* A version 2 catalog: read as it is, migrated by a writer. */
	sqlite3 *db2;
	sqlite3_open(path, &db2);
	ok(sqlite3_exec(db2,
			"DROP TABLE resyncs; ALTER TABLE points DROP COLUMN group_round; "
			"PRAGMA user_version = 2",
			NULL, NULL, NULL) == SQLITE_OK,
	   "made a version 2 catalog");
	sqlite3_close(db2);
	ok_r(ferry_catalog_open(path, 1, &c), "a version 2 catalog opens read-only");
	ok(c && ferry_catalog_resync_get(c, vm.id, &grs) == -ENOENT, "it has no resync");
	ferry_catalog_free(c);
	ok_r(ferry_catalog_open(path, 0, &c), "a writer migrates it");
	ok(c && ferry_catalog_resync_get(c, vm.id, &grs) == -ENOENT &&
		   ferry_catalog_resync_set(c, &rs) == 0,
	   "to version 3, with a resyncs table");
	rounds = 1;
	ok(c && ferry_catalog_point_list(c, vm.id, round_cb, &rounds) == 0 && rounds == 1,
	   "and to version 4: old points have no group round");
	ferry_catalog_free(c);

	/* A version 3 catalog: points without group_round. */
	sqlite3_open(path, &db2);
	ok(sqlite3_exec(db2, "ALTER TABLE points DROP COLUMN group_round; PRAGMA user_version = 3",
			NULL, NULL, NULL) == SQLITE_OK,
	   "made a version 3 catalog");
	sqlite3_close(db2);
	ok_r(ferry_catalog_open(path, 1, &c), "a version 3 catalog opens read-only");
	n = 0;
	rounds = 0;
	ok(c && ferry_catalog_point_list(c, vm.id, count_cb, &n) == 0 && n == 2 &&
		   ferry_catalog_point_list(c, vm.id, round_cb, &rounds) == 0 && rounds == 0,
	   "its points list, with group round 0");
	ferry_catalog_free(c);
	ok_r(ferry_catalog_open(path, 0, &c), "a writer migrates it");
	p4.id = 0;
	p4.name[0] = 0;
	p4.time_ns += 60000000000LL;
	p4.group_round = 7;
	rounds = 0;
	ok(c && ferry_catalog_point_add(c, &p4, &pd, 1) == 0 &&
		   ferry_catalog_point_list(c, vm.id, round_cb, &rounds) == 0 && rounds == 7,
	   "to version 4: a group point round trips");
	sqlite3_open(path, &db2);
	sqlite3_stmt *st = NULL;
	sqlite3_prepare_v2(db2, "PRAGMA user_version", -1, &st, NULL);
	ok(st && sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int(st, 0) == 4,
	   "user_version is 4");
	sqlite3_finalize(st);
	sqlite3_close(db2);
	ferry_catalog_free(c);

	/* A newer schema is refused, not misread. */
	sqlite3 *db;
	sqlite3_open(path, &db);
	sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL);
	sqlite3_close(db);
	ok(ferry_catalog_open(path, 0, &c) == -EPROTONOSUPPORT, "newer schema refused");

	char junk[256];
	snprintf(junk, sizeof(junk), "%s/junk.db", dir);
	ferry_write_file_atomic(junk, "this is not sqlite at all, not even close........", 50);
	ok(ferry_catalog_open(junk, 0, &c) == -EBADMSG, "a non-database is -EBADMSG");

	char cmd[512];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		return 1;
	return tap_done();
}
