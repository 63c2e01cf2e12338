/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Records (records.h): round trips of every kind, escaping of awkward
 * paths, the compatibility rules (unknown keys ignored, unknown major
 * refused), every truncation and every flipped byte refused cleanly or
 * decoded to a valid record, missing, duplicate and out-of-range fields
 * refused, the point's group-round of version 1.1 (written only when set,
 * so that other records stay 1.0 byte for byte), and ferry_record_store
 * into a real vault (one pack, indexed, stored once). With FERRY_WRITE_CORPUS=DIR it also writes the fuzz seeds.
 */
#include "ferry/records.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ferry/catalog.h"
#include "ferry/util.h"
#include "ferry/vault.h"
#include "tap.h"

static struct ferry_disk vm_disks[2];
static struct ferry_record_resource resources[3];
static struct ferry_disk state_disks[2];
static struct ferry_point_disk point_disks[2];

static void fill(struct ferry_record_vault *va, struct ferry_record_vm *vm,
		 struct ferry_record_state *st, struct ferry_record_point *pt)
{
	*va = (struct ferry_record_vault){ .chunk_size = 65536, .created_ns = 1795757400000000000 };
	snprintf(va->vault_id, sizeof(va->vault_id), "0123456789abcdef0123456789abcdef");

	*vm = (struct ferry_record_vm){ .created_ns = 17,
					.written_ns = 18,
					.crash_interval_s = 0,
					.app_interval_s = 3600,
					.retention_s = 86400,
					.disks = vm_disks,
					.ndisks = 2,
					.resources = resources,
					.nresources = 3 };
	snprintf(vm->name, sizeof(vm->name), "web1");
	snprintf(vm->cache_url, sizeof(vm->cache_url), "azblob://cache/pre fix");
	for (int i = 0; i < 2; i++) {
		vm_disks[i] = (struct ferry_disk){ .idx = (uint16_t)i };
		snprintf(vm_disks[i].name, sizeof(vm_disks[i].name), i ? "data" : "os");
	}
	/* Every awkward byte a path can hold: space, %, =, newline, UTF-8. */
	snprintf(vm_disks[0].source_path, sizeof(vm_disks[0].source_path),
		 "/srv/my disks/100%% = os\n\tdisk\xc3\xa9.img");
	snprintf(vm_disks[1].source_path, sizeof(vm_disks[1].source_path), "/dev/vdb");
	const char *kv[][2] = { { "target-group", "g-ferry" },
				{ "network-mapping", "a->b" },
				{ "nic.0", "mac=52:54:00:00:00:01,model=virtio" } };
	for (int i = 0; i < 3; i++) {
		snprintf(resources[i].kind, sizeof(resources[i].kind), "%s", kv[i][0]);
		snprintf(resources[i].value, sizeof(resources[i].value), "%s", kv[i][1]);
	}

	*st = (struct ferry_record_state){ .vm_created_ns = 17,
					   .state = FERRY_VM_PROTECTED,
					   .applied_seq = 42,
					   .marker_seq = 41,
					   .marker_ns = -5,
					   .initial_done = 100,
					   .initial_total = 100,
					   .disks = state_disks,
					   .ndisks = 2 };
	snprintf(st->vm, sizeof(st->vm), "web1");
	memset(st->applied_digest.b, 0xab, FERRY_ID_SIZE);
	for (int i = 0; i < 2; i++) {
		state_disks[i] =
			(struct ferry_disk){ .idx = (uint16_t)i, .size = 1ull << (30 + i) };
		snprintf(state_disks[i].name, sizeof(state_disks[i].name), i ? "data" : "os");
		memset(state_disks[i].live_root.b, 1 + i, FERRY_ID_SIZE);
		memset(state_disks[i].work_root.b, 3 + i, FERRY_ID_SIZE);
	}
	memset(state_disks[1].live_root.b, 0, FERRY_ID_SIZE); /* null root */

	*pt = (struct ferry_record_point){ .vm_created_ns = 17,
					   .time_ns = 1795757400123456789,
					   .consistency = 2,
					   .seq = 41,
					   .disks = point_disks,
					   .ndisks = 2 };
	snprintf(pt->vm, sizeof(pt->vm), "web1");
	snprintf(pt->name, sizeof(pt->name), "20261127T053000Z-2");
	memset(pt->digest.b, 0xcd, FERRY_ID_SIZE);
	for (int i = 0; i < 2; i++) {
		point_disks[i] = (struct ferry_point_disk){ .idx = (uint16_t)i, .size = 4096 };
		snprintf(point_disks[i].name, sizeof(point_disks[i].name), i ? "data" : "os");
		memset(point_disks[i].root.b, 7 + i, FERRY_ID_SIZE);
	}
}

/* Decodes buf as any kind; 1 if some decoder accepted it. */
static int decodes(const void *buf, size_t len, int *ret_err)
{
	struct ferry_record_vault va;
	struct ferry_record_vm vm;
	struct ferry_record_state st;
	struct ferry_record_point pt;
	int ok_any = 0, r;
	*ret_err = 0;
	if ((r = ferry_record_vault_decode(buf, len, &va)) == 0)
		ok_any = 1;
	else if (r != -EBADMSG && r != -EPROTONOSUPPORT)
		*ret_err = r;
	if ((r = ferry_record_vm_decode(buf, len, &vm)) == 0) {
		ok_any = 1;
		ferry_record_vm_done(&vm);
	} else if (r != -EBADMSG && r != -EPROTONOSUPPORT)
		*ret_err = r;
	if ((r = ferry_record_state_decode(buf, len, &st)) == 0) {
		ok_any = 1;
		ferry_record_state_done(&st);
	} else if (r != -EBADMSG && r != -EPROTONOSUPPORT)
		*ret_err = r;
	if ((r = ferry_record_point_decode(buf, len, &pt)) == 0) {
		ok_any = 1;
		ferry_record_point_done(&pt);
	} else if (r != -EBADMSG && r != -EPROTONOSUPPORT)
		*ret_err = r;
	return ok_any;
}

/* Every truncation is refused; every flipped byte is refused or decodes. */
static void damage(const char *what, const char *buf, size_t len)
{
	int bad = 0, err;
	for (size_t i = 0; i < len; i++)
		if (decodes(buf, i, &err) || err)
			bad++;
	ok(bad == 0, "%s: all %zu truncations refused with EBADMSG", what, len);
	char *copy = malloc(len);
	bad = 0;
	for (size_t i = 0; i < len; i++)
		for (int bit = 0; bit < 8; bit++) {
			memcpy(copy, buf, len);
			copy[i] ^= (char)(1 << bit);
			decodes(copy, len, &err);
			if (err)
				bad++;
		}
	free(copy);
	ok(bad == 0, "%s: every flipped bit refused cleanly or decoded", what);
}

static char *replace(const char *s, const char *from, const char *to)
{
	const char *p = strstr(s, from);
	if (!p)
		return NULL;
	char *out = malloc(strlen(s) + strlen(to) + 1);
	size_t pre = (size_t)(p - s);
	memcpy(out, s, pre);
	strcpy(out + pre, to);
	strcat(out, p + strlen(from));
	return out;
}

static void write_seed(const char *dir, const char *name, const void *buf, size_t len)
{
	if (!dir)
		return;
	char path[1024];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	ferry_write_file_atomic(path, buf, len);
}

int main(void)
{
	const char *corpus = getenv("FERRY_WRITE_CORPUS");
	struct ferry_record_vault va, va2;
	struct ferry_record_vm vm, vm2;
	struct ferry_record_state st, st2;
	struct ferry_record_point pt, pt2;
	fill(&va, &vm, &st, &pt);

	char *e_va, *e_vm, *e_st, *e_pt;
	size_t l_va, l_vm, l_st, l_pt;
	ok_r(ferry_record_vault_encode(&va, &e_va, &l_va), "vault encodes");
	ok_r(ferry_record_vm_encode(&vm, &e_vm, &l_vm), "vm encodes");
	ok_r(ferry_record_state_encode(&st, &e_st, &l_st), "state encodes");
	ok_r(ferry_record_point_encode(&pt, &e_pt, &l_pt), "point encodes");
	write_seed(corpus, "good-vault", e_va, l_va);
	write_seed(corpus, "good-vm", e_vm, l_vm);
	write_seed(corpus, "good-state", e_st, l_st);
	write_seed(corpus, "good-point", e_pt, l_pt);

	ok(strncmp(e_va, "FERRYREC 1.0 vault\n", 19) == 0, "vault header");
	ok(strstr(e_vm, "disk.0.source=/srv/my disks/100%25 = os%0A%09disk%C3%A9.img\n") != NULL,
	   "awkward path escaped");
	ok(l_pt > 4 && memcmp(e_pt + l_pt - 4, "end\n", 4) == 0, "ends with the end line");

	ok_r(ferry_record_vault_decode(e_va, l_va, &va2), "vault decodes");
	ok(strcmp(va2.vault_id, va.vault_id) == 0 && va2.chunk_size == va.chunk_size &&
		   va2.created_ns == va.created_ns,
	   "vault round trip");

	ok_r(ferry_record_vm_decode(e_vm, l_vm, &vm2), "vm decodes");
	ok(strcmp(vm2.name, "web1") == 0 && vm2.created_ns == 17 && vm2.written_ns == 18 &&
		   strcmp(vm2.cache_url, vm.cache_url) == 0 && vm2.crash_interval_s == 0 &&
		   vm2.app_interval_s == 3600 && vm2.retention_s == 86400 && vm2.ndisks == 2 &&
		   vm2.nresources == 3,
	   "vm fields round trip");
	ok(vm2.ndisks == 2 && strcmp(vm2.disks[0].source_path, vm_disks[0].source_path) == 0 &&
		   strcmp(vm2.disks[1].name, "data") == 0 && vm2.disks[1].idx == 1,
	   "vm disks round trip (escaped path intact)");
	ok(vm2.nresources == 3 && strcmp(vm2.resources[1].value, "a->b") == 0 &&
		   strcmp(vm2.resources[2].kind, "nic.0") == 0,
	   "resources round trip in order");
	ferry_record_vm_done(&vm2);
	ferry_record_vm_done(&vm2); /* twice is harmless */

	ok_r(ferry_record_state_decode(e_st, l_st, &st2), "state decodes");
	ok(st2.applied_seq == 42 && st2.marker_ns == -5 && st2.state == FERRY_VM_PROTECTED &&
		   ferry_id_equal(&st2.applied_digest, &st.applied_digest) && st2.ndisks == 2 &&
		   ferry_id_equal(&st2.disks[0].work_root, &state_disks[0].work_root) &&
		   ferry_id_is_null(&st2.disks[1].live_root) && st2.disks[1].size == 1ull << 31,
	   "state round trip (null root, negative time)");
	ferry_record_state_done(&st2);

	ok_r(ferry_record_point_decode(e_pt, l_pt, &pt2), "point decodes");
	ok(strcmp(pt2.name, pt.name) == 0 && pt2.time_ns == pt.time_ns && pt2.consistency == 2 &&
		   pt2.seq == 41 && ferry_id_equal(&pt2.digest, &pt.digest) && pt2.ndisks == 2 &&
		   ferry_id_equal(&pt2.disks[1].root, &point_disks[1].root),
	   "point round trip");
	ferry_record_point_done(&pt2);

	enum ferry_obj_type t;
	ok(ferry_record_kind(e_st, l_st, &t) == 0 && t == FERRY_OBJ_STATE, "kind of a state");
	ok(ferry_record_point_decode(e_st, l_st, &pt2) == -EBADMSG, "a state is not a point");
	ok(ferry_record_vm_decode(e_vm, l_vm - 1, &vm2) == -EBADMSG, "no final newline: EBADMSG");

	/* 1.1: a group point's round; absent, the record stays 1.0. */
	ok(strncmp(e_pt, "FERRYREC 1.0 point\n", 19) == 0 && !strstr(e_pt, "group-round"),
	   "a point without a group round is written as 1.0, as before");
	struct ferry_record_point gp = pt;
	gp.group_round = 29833338;
	char *e_gp;
	size_t l_gp;
	ok_r(ferry_record_point_encode(&gp, &e_gp, &l_gp), "group point encodes");
	write_seed(corpus, "good-point-group", e_gp, l_gp);
	ok(strncmp(e_gp, "FERRYREC 1.1 point\n", 19) == 0 &&
		   strstr(e_gp, "\ndigest=") < strstr(e_gp, "\ngroup-round=29833338\n"),
	   "a group point is 1.1, its round after the 1.0 fields");
	ok(ferry_record_point_decode(e_gp, l_gp, &pt2) == 0 && pt2.group_round == 29833338 &&
		   pt2.seq == 41,
	   "group round round trip");
	ferry_record_point_done(&pt2);
	ok(ferry_record_point_decode(e_pt, l_pt, &pt2) == 0 && pt2.group_round == 0,
	   "a 1.0 point has group round 0");
	ferry_record_point_done(&pt2);
	free(e_gp);
	gp.group_round = (uint64_t)INT64_MAX + 1;
	ok(ferry_record_point_encode(&gp, &e_gp, &l_gp) == -EINVAL || (free(e_gp), 0),
	   "a group round past 2^63 - 1 is refused");

	/* Compatibility: a later minor may add keys; another major is refused. */
	char *s = replace(e_pt, "FERRYREC 1.0 point", "FERRYREC 1.7 point");
	char *s2 = replace(s, "seq=41\n", "seq=41\nfuture-key=x\ndisk.0.future=1\n");
	ok(ferry_record_point_decode(s2, strlen(s2), &pt2) == 0, "minor 1.7 with new keys decodes");
	ferry_record_point_done(&pt2);
	write_seed(corpus, "good-minor", s2, strlen(s2));
	free(s);
	free(s2);
	s = replace(e_pt, "FERRYREC 1.0", "FERRYREC 2.0");
	ok(ferry_record_point_decode(s, strlen(s), &pt2) == -EPROTONOSUPPORT, "major 2 refused");
	write_seed(corpus, "major-2", s, strlen(s));
	free(s);

	/* Each of these must be refused. */
	const char *bad[][3] = {
		{ e_pt, "seq=41\n", "" },                             /* missing field */
		{ e_pt, "seq=41\n", "seq=41\nseq=41\n" },             /* duplicate */
		{ e_pt, "seq=41\n", "seq=041\n" },                    /* leading zero */
		{ e_pt, "seq=41\n", "seq=18446744073709551616\n" },   /* overflow */
		{ e_pt, "consistency=2\n", "consistency=3\n" },       /* out of range */
		{ e_pt, "vm=web1\n", "vm=we/b1\n" },                  /* invalid name */
		{ e_pt, "disk.1.name=data\n", "disk.2.name=data\n" }, /* gap */
		{ e_pt, "disk.1.size=4096\n", "" },                   /* disk field missing */
		{ e_pt, "digest=cd", "digest=CD" },                   /* upper-case id */
		{ e_pt, "end\n", "end\nx" },                          /* trailing bytes */
		{ e_pt, "end\n", "" },                                /* no end line */
		{ e_pt, "vm=web1\n", "VM=web1\n" },                   /* bad key */
		{ e_vm, "%25", "%2" },                                /* short escape */
		{ e_vm, "%25", "%00" },                               /* NUL */
		{ e_vm, "%0A", "\n" },                                /* raw newline in value */
		{ e_vm, "retention=86400", "retention=0" },           /* retention 0 */
		{ e_va, "chunk-size=65536", "chunk-size=65537" },     /* not a power of two */
		{ e_st, "state=2", "state=9" },                       /* unknown state */
		{ e_pt, "seq=41\n", "seq=41\ngroup-round=9223372036854775808\n" }, /* round */
		{ e_pt, "seq=41\n", "seq=41\ngroup-round=1\ngroup-round=1\n" },    /* twice */
		{ e_pt, "seq=41\n", "seq=41\ngroup-round=01\n" },                  /* zero */
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		char *x = replace(bad[i][0], bad[i][1], bad[i][2]);
		int err;
		ok(x && !decodes(x, strlen(x), &err) && err == 0, "damaged record %zu refused", i);
		char name[32];
		snprintf(name, sizeof(name), "bad-%02zu", i);
		if (x)
			write_seed(corpus, name, x, strlen(x));
		free(x);
	}

	/* Encoders refuse what decoders would refuse. */
	struct ferry_record_point badp = pt;
	snprintf(badp.vm, sizeof(badp.vm), "a b");
	char *eb;
	size_t lb;
	ok(ferry_record_point_encode(&badp, &eb, &lb) == -EINVAL, "encoder refuses a bad name");
	badp = pt;
	badp.disks[1].idx = 5;
	ok(ferry_record_point_encode(&badp, &eb, &lb) == -EINVAL, "encoder refuses a disk gap");
	point_disks[1].idx = 1;

	damage("vault", e_va, l_va);
	damage("point", e_pt, l_pt);
	damage("state", e_st, l_st);

	/* ferry_record_store: one pack, indexed, and a known id is not stored again. */
	char dir[] = "/tmp/ferry-test-records-XXXXXX";
	if (!mkdtemp(dir))
		return 1;
	char vdir[300];
	snprintf(vdir, sizeof(vdir), "%s/v", dir);
	ok_r(ferry_vault_create(vdir, 65536, NULL), "vault create");
	struct ferry_vault *v;
	ok_r(ferry_vault_open(vdir, 0, &v), "vault open");
	struct ferry_catalog *c = ferry_vault_catalog(v);
	struct ferry_id id, id2;
	ok_r(ferry_record_store(v, FERRY_OBJ_POINT, e_pt, l_pt, &id, NULL, NULL), "record stored");
	ok_r(ferry_record_store(v, FERRY_OBJ_POINT, e_pt, l_pt, &id2, NULL, NULL), "stored again");
	ok(ferry_id_equal(&id, &id2), "same id");
	uint64_t bytes;
	ok_r(ferry_catalog_store_bytes(c, &bytes), "store bytes");
	ok(bytes > 0 && bytes < 32 + 56 + l_pt + 1, "one pack with one entry (%llu bytes)",
	   (unsigned long long)bytes);
	void *back;
	size_t blen;
	ok_r(ferry_vault_read_object(v, &id, &back, &blen), "read back through the vault");
	ok(blen == l_pt && memcmp(back, e_pt, l_pt) == 0, "same bytes");
	free(back);
	ferry_vault_free(v);
	char cmd[400];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		printf("# could not remove %s\n", dir);

	free(e_va);
	free(e_vm);
	free(e_st);
	free(e_pt);
	return tap_done();
}
