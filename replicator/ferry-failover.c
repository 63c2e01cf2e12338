/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Failover verbs: test failover and its cleanup, failover, change of the
 * recovery point, commit, and the job history. A failover is a row in the
 * catalog naming a writable clone of a recovery point's disks; ferryfs
 * shows it under MOUNT/<vm>/failovers/<name>/ with the VM's definition next
 * to the images. Nothing is copied, so a failover is ready at once whatever
 * the disk size. With --group, a verb acts on every VM of a consistency
 * group at one group point (grouppoint.h): each VM checked first, then
 * the per-VM steps of all of them in one catalog transaction. A VM that
 * joined the group after the group point has no point of it and is left
 * alone, by the verbs at the point and by those on their failovers.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "ferry/catalog.h"
#include "ferry/changelog.h"
#include "ferry/log.h"
#include "fostate.h"
#include "grouppoint.h"
#include "maint.h"
#include "replicate.h"

#define MAX_DISKS 64

/* The disks a failover starts from: a point's, or the live state at the
 * newest applied marker (seq). */
struct choice {
	char name[48];
	int64_t time_ns;
	uint64_t seq;
	struct ferry_clone_disk disks[MAX_DISKS];
	size_t ndisks;
};

struct pick_ctx {
	const char *spec;
	struct ferry_point found;
	int have;
};

static int pick_point(const struct ferry_point *p, void *userdata)
{
	struct pick_ctx *pc = userdata;
	int want = strcmp(pc->spec, "latest") == 0 ||
		   (strcmp(pc->spec, "latest-app-consistent") == 0 &&
		    p->consistency == FERRY_CONSISTENCY_APP) ||
		   strcmp(pc->spec, p->name) == 0;
	if (want) {
		pc->found = *p; /* oldest first: the last match is the newest */
		pc->have = 1;
	}
	return 0;
}

static int add_disk(struct choice *c, uint16_t idx, const char *name, uint64_t size,
		    const struct ferry_id *root)
{
	if (c->ndisks == MAX_DISKS)
		return -E2BIG;
	struct ferry_clone_disk *cd = &c->disks[c->ndisks++];
	*cd = (struct ferry_clone_disk){
		.idx = idx, .size = size, .base_root = *root, .root = *root
	};
	snprintf(cd->name, sizeof(cd->name), "%s", name);
	return 0;
}

static int add_point_disk(const struct ferry_point_disk *d, void *userdata)
{
	return add_disk(userdata, d->idx, d->name, d->size, &d->root);
}

static int add_live_disk(const struct ferry_disk *d, void *userdata)
{
	return add_disk(userdata, d->idx, d->name, d->size, &d->live_root);
}

static int point_at_seq(const struct ferry_point *p, void *userdata)
{
	struct pick_ctx *pc = userdata;
	if (p->seq == pc->found.seq && p->time_ns == pc->found.time_ns) {
		pc->found = *p;
		pc->have = 1;
	}
	return 0;
}

/*
 * The newest applied marker, named as what it is: the recovery point cut
 * at it where there is one, else "seq N at TIME". Never the keyword, so
 * that the failover says which state it runs from.
 */
static int resolve_processed(struct ferry_catalog *c, const struct ferry_vm *vm, struct choice *ret)
{
	if (vm->marker_seq == 0)
		return log_error("VM %s has no applied consistency marker yet", vm->name), -ENOENT;
	struct pick_ctx pc = { .found = { .seq = vm->marker_seq, .time_ns = vm->marker_ns } };
	int r = ferry_catalog_point_list(c, vm->id, point_at_seq, &pc);
	if (r < 0)
		return log_error_errno(r, "cannot list the points of VM %s", vm->name);
	if (pc.have) {
		snprintf(ret->name, sizeof(ret->name), "%s", pc.found.name);
	} else {
		char when[FERRY_TIME_STRING_SIZE];
		ferry_format_time(vm->marker_ns, when, sizeof(when));
		snprintf(ret->name, sizeof(ret->name), "seq %llu at %s",
			 (unsigned long long)vm->marker_seq, when);
	}
	ret->time_ns = vm->marker_ns;
	ret->seq = vm->marker_seq;
	return ferry_catalog_disk_list(c, vm->id, add_live_disk, ret);
}

/*
 * spec: a point id, "latest", "latest-app-consistent", or "latest-processed"
 * (the newest applied consistency marker, which may be newer than any
 * point). Logs why it fails.
 */
static int resolve_point(struct ferry_vault *v, const struct ferry_vm *vm, const char *spec,
			 struct choice *ret)
{
	struct ferry_catalog *c = ferry_vault_catalog(v);
	memset(ret, 0, sizeof(*ret));
	if (strcmp(spec, "latest-processed") == 0)
		return resolve_processed(c, vm, ret);
	struct pick_ctx pc = { .spec = spec };
	int r = ferry_catalog_point_list(c, vm->id, pick_point, &pc);
	if (r < 0)
		return log_error_errno(r, "cannot list the points of VM %s", vm->name);
	if (!pc.have) {
		if (strncmp(spec, "latest", 6) == 0)
			log_error("VM %s has no %s recovery point", vm->name,
				  strcmp(spec, "latest") == 0 ? "" : "app-consistent");
		else
			log_error("VM %s has no recovery point '%s' (see ferry recovery-points)",
				  vm->name, spec);
		return -ENOENT;
	}
	snprintf(ret->name, sizeof(ret->name), "%s", pc.found.name);
	ret->time_ns = pc.found.time_ns;
	ret->seq = pc.found.seq;
	return ferry_catalog_point_disks(c, pc.found.id, add_point_disk, ret);
}

/* Options of the failover verbs. */
struct fo_args {
	struct opts o;
	const char *vm, *point, *network, *name, *accel;
	const char *group;   /* --group: every VM of the group, instead of vm */
	const char *connect; /* test-failover-cleanup: the target's libvirt */
};

static int parse_fo(int argc, char **argv, const char *help, struct fo_args *a)
{
	enum {
		O_VAULT = 0x100,
		O_POINT,
		O_NETWORK,
		O_NAME,
		O_ACCEL,
		O_CONNECT,
		O_GROUP
	};
	static const struct option longopts[] = {
		{ "vault", required_argument, NULL, O_VAULT },
		{ "recovery-point", required_argument, NULL, O_POINT },
		{ "network", required_argument, NULL, O_NETWORK },
		{ "name", required_argument, NULL, O_NAME },
		{ "accel", required_argument, NULL, O_ACCEL },
		{ "connect", required_argument, NULL, O_CONNECT },
		{ "group", required_argument, NULL, O_GROUP },
		{ "help", no_argument, NULL, 'h' },
		{},
	};
	optind = 1;
	int c;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) >= 0) {
		switch (c) {
		case O_VAULT:
			a->o.vault = optarg;
			break;
		case O_POINT:
			a->point = optarg;
			break;
		case O_NETWORK:
			a->network = optarg;
			break;
		case O_NAME:
			a->name = optarg;
			break;
		case O_ACCEL:
			a->accel = optarg;
			break;
		case O_CONNECT:
			a->connect = optarg;
			break;
		case O_GROUP:
			a->group = optarg;
			break;
		case 'h':
			fputs(help, stdout);
			return 0;
		default:
			return 2;
		}
	}
	if (!a->o.vault || optind + !a->group != argc) {
		log_error("expected --vault DIR and one VM name, or --group NAME (see --help)");
		return 2;
	}
	a->vm = a->group ? NULL : argv[optind];
	const char *names[] = { a->network, a->name, a->group };
	for (size_t i = 0; i < ARRAY_SIZE(names); i++)
		if (names[i] && !ferry_name_valid(names[i])) {
			log_error("'%s' is not a valid name: use 1-64 of [A-Za-z0-9._-]", names[i]);
			return 2;
		}
	if (a->accel && (strlen(a->accel) >= 32 ||
			 strspn(a->accel, "abcdefghijklmnopqrstuvwxyz:") != strlen(a->accel))) {
		log_error("--accel wants accelerator names separated by ':', such as kvm:tcg");
		return 2;
	}
	return -1;
}

/* Why a failover of that name cannot be added, if it cannot. */
static int name_free_or_explain(struct ferry_vault *v, const struct ferry_vm *vm,
				const struct ferry_failover *f, const char *vault)
{
	struct ferry_failover existing;
	int r = ferry_catalog_failover_get(ferry_vault_catalog(v), vm->id, f->name, &existing);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return log_error_errno(r, "cannot read the failovers of VM %s", vm->name);
	if (existing.kind == FERRY_FAILOVER_TEST)
		log_error("VM %s already has a failover named '%s', a test failover: run 'ferry "
			  "test-failover-cleanup --vault %s %s --name %s' first, or choose "
			  "another --name",
			  vm->name, f->name, vault, vm->name, f->name);
	else
		log_error("VM %s already has a failover named '%s', its failover: choose another "
			  "--name",
			  vm->name, f->name);
	return -EEXIST;
}

/*
 * Inside the caller's write transaction: resolves spec (resolve_point) and
 * adds the failover, its job and event. The roots the clone starts from
 * are read where nobody can thin the point or collect its data before the
 * clone keeps them alive (GC's rules, docs/architecture.md). The VM must
 * still be in the state it was checked in; it goes to next. ch gets the
 * point; note, if not NULL, ends the job's detail (a group's point).
 * -ENOENT when the reason was said (the point, or the VM moved).
 */
static int record_failover_in(struct ferry_vault *v, struct ferry_vm *vm, struct ferry_failover *f,
			      const char *spec, struct choice *ch, const char *job,
			      enum ferry_vm_state next, const char *note)
{
	struct ferry_catalog *c = ferry_vault_catalog(v);
	int r = fostate_recheck(c, vm, vm->state);
	if (r >= 0)
		r = resolve_point(v, vm, spec, ch);
	if (r < 0)
		return r == -ESTALE ? -ENOENT : r; /* said why */
	snprintf(f->point_name, sizeof(f->point_name), "%s", ch->name);
	f->point_time_ns = ch->time_ns;
	char detail[320];
	snprintf(detail, sizeof(detail), "%s from %s (seq %llu) on network %s/%s%s", f->name,
		 ch->name, (unsigned long long)ch->seq, f->network, f->subnet, note ?: "");
	r = ferry_catalog_failover_add(c, f, ch->disks, ch->ndisks);
	if (r >= 0 && next != vm->state) {
		vm->state = next;
		r = ferry_catalog_vm_update(c, vm);
	}
	if (r >= 0)
		r = ferry_catalog_job_add(c, vm->id, job, "succeeded", detail, NULL);
	if (r >= 0) {
		char ev[400];
		snprintf(ev, sizeof(ev), "%s: %s", job, detail);
		r = ferry_catalog_event_add(c, vm->id, "info", ev);
	}
	return r;
}

/* record_failover_in in a write transaction of its own. */
static int record_failover(struct ferry_vault *v, struct ferry_vm *vm, struct ferry_failover *f,
			   const char *spec, struct choice *ch, const char *job,
			   enum ferry_vm_state next)
{
	struct ferry_catalog *c = ferry_vault_catalog(v);
	int r = ferry_catalog_begin(c);
	if (r < 0)
		return r;
	r = record_failover_in(v, vm, f, spec, ch, job, next, NULL);
	if (r < 0) {
		ferry_catalog_rollback(c);
		return r;
	}
	return ferry_catalog_commit(c);
}

static void print_clone(const struct ferry_vm *vm, const struct ferry_failover *f,
			const struct choice *ch)
{
	fprintf(stderr,
		"Clone '%s' of VM %s from %s (seq %llu) is ready on network %s/%s.\n"
		"In any ferryfs mount of this vault: MOUNT/%s/failovers/%s/ holds",
		f->name, vm->name, ch->name, (unsigned long long)ch->seq, f->network, f->subnet,
		vm->name, f->name);
	for (size_t i = 0; i < ch->ndisks; i++)
		fprintf(stderr, " %s.img", ch->disks[i].name);
	fprintf(stderr, " domain.xml qemu.args\n");
}

static void print_where(const struct ferry_vm *vm, const struct ferry_failover *f,
			const struct choice *ch)
{
	printf("%s\n", f->name);
	print_clone(vm, f, ch);
}

static int group_verb(struct fo_args *a, enum fostate_verb verb);

static const char test_failover_help[] =
	"Usage: ferry test-failover --vault DIR VM [--recovery-point ID|latest|latest-processed|\n"
	"         latest-app-consistent] [--network NET] [--name NAME] [--accel A[:B]]\n"
	"       ferry test-failover --vault DIR --group GROUP [--recovery-point ID|latest|\n"
	"         latest-app-consistent] [--network NET] [--name NAME] [--accel A[:B]]\n"
	"\n"
	"Creates a writable copy-on-write clone of a recovery point's disks in an\n"
	"isolated test network (default TARGET-NETWORK-test), with a VM definition\n"
	"(domain.xml, qemu.args), without touching replication. Prints the clone's\n"
	"name; its images appear in ferryfs under VM/failovers/NAME/.\n"
	"Default point: latest. Default name: test. Default accelerators: kvm:tcg.\n"
	"With --group, every VM of the consistency group at one group point (ferry\n"
	"recovery-points --group), or none of them if one cannot; prints VM and name.\n";

int cmd_test_failover(int argc, char **argv)
{
	struct fo_args a = { 0 };
	int r = parse_fo(argc, argv, test_failover_help, &a);
	if (r >= 0)
		return r;
	if (a.group)
		return group_verb(&a, FOSTATE_TEST_FAILOVER);
	_cleanup_(ferry_vault_freep) struct ferry_vault *v = NULL;
	struct ferry_vm vm;
	enum ferry_vm_state next;
	if (open_vault(a.o.vault, 0, &v) < 0 || get_vm(v, a.vm, &vm) < 0 ||
	    fostate_require(v, &vm, FOSTATE_TEST_FAILOVER, &next) < 0)
		return 1;

	struct ferry_catalog *c = ferry_vault_catalog(v);
	struct ferry_failover f = { .vm_id = vm.id,
				    .kind = FERRY_FAILOVER_TEST,
				    .state = FERRY_FAILOVER_ACTIVE,
				    .created_ns = ferry_now_ns() };
	snprintf(f.name, sizeof(f.name), "%s", a.name ?: "test");
	snprintf(f.accel, sizeof(f.accel), "%s", a.accel ?: "kvm:tcg");
	if (name_free_or_explain(v, &vm, &f, a.o.vault) < 0)
		return 1;
	char tn[FERRY_NAME_MAX + 1] = "", ts[FERRY_NAME_MAX + 1] = "";
	ferry_catalog_resource_get(c, vm.id, "target-network", tn, sizeof(tn));
	ferry_catalog_resource_get(c, vm.id, "target-subnet", ts, sizeof(ts));
	if (a.network)
		snprintf(f.network, sizeof(f.network), "%s", a.network);
	else
		snprintf(f.network, sizeof(f.network), "%.59s-test", tn);
	snprintf(f.subnet, sizeof(f.subnet), "%s", ts);

	struct choice ch;
	r = record_failover(v, &vm, &f, a.point ?: "latest", &ch, "test-failover", next);
	if (r == -ENOENT)
		return 1; /* resolve_point said why */
	if (r < 0)
		return log_error_errno(r, "cannot create test failover of VM %s", vm.name), 1;
	print_where(&vm, &f, &ch);
	return 0;
}

/* Inside the caller's write transaction. */
static int drop_failover_in(struct ferry_catalog *c, struct ferry_vm *vm,
			    const struct ferry_failover *f, const char *job)
{
	int r = ferry_catalog_failover_delete(c, f->id);
	if (r >= 0)
		r = ferry_catalog_job_add(c, vm->id, job, "succeeded", f->name, NULL);
	return r;
}

static int drop_failover(struct ferry_vault *v, struct ferry_vm *vm, const struct ferry_failover *f,
			 const char *job)
{
	struct ferry_catalog *c = ferry_vault_catalog(v);
	int r = ferry_catalog_begin(c);
	if (r < 0)
		return r;
	r = drop_failover_in(c, vm, f, job);
	if (r < 0) {
		ferry_catalog_rollback(c);
		return r;
	}
	return ferry_catalog_commit(c);
}

int cmd_test_failover_cleanup(int argc, char **argv)
{
	struct fo_args a = { 0 };
	int r = parse_fo(
		argc, argv,
		"Usage: ferry test-failover-cleanup --vault DIR VM [--name NAME] [--connect URI]\n"
		"       ferry test-failover-cleanup --vault DIR --group GROUP [--name NAME]\n\n"
		"Removes a test failover's clone and VM definition; its data goes at the\n"
		"next garbage collection. Replication is not touched. Default name: test.\n"
		"For a VM replicated from a libvirt domain, the libvirt domain defined from\n"
		"the failover's domain.xml (VM-NAME) is stopped and undefined first, at\n"
		"--connect URI (default qemu:///system).\n",
		&a);
	if (r >= 0)
		return r;
	if (a.group)
		return group_verb(&a, FOSTATE_TEST_FAILOVER_CLEANUP);
	_cleanup_(ferry_vault_freep) struct ferry_vault *v = NULL;
	struct ferry_vm vm;
	if (open_vault(a.o.vault, 0, &v) < 0 || get_vm(v, a.vm, &vm) < 0 ||
	    fostate_require(v, &vm, FOSTATE_TEST_FAILOVER_CLEANUP, NULL) < 0)
		return 1;
	const char *name = a.name ?: "test";
	struct ferry_failover f;
	r = ferry_catalog_failover_get(ferry_vault_catalog(v), vm.id, name, &f);
	if (r == -ENOENT) {
		log_error("VM %s has no test failover named '%s' (ferry status --vault %s lists "
			  "its failovers)",
			  vm.name, name, a.o.vault);
		return 1;
	}
	if (r >= 0 && f.kind != FERRY_FAILOVER_TEST) {
		log_error("VM %s has no test failover named '%s': '%s' is its failover, which "
			  "test-failover-cleanup never removes",
			  vm.name, name, name);
		return 1;
	}
	/* The domain defined from the failover's domain.xml runs on its clone:
	 * it goes first. One libvirt keeps running cannot lose its disks. */
	char tracker[32];
	if (r >= 0 &&
	    ferry_catalog_resource_get(ferry_vault_catalog(v), vm.id, "tracker", tracker,
				       sizeof(tracker)) >= 0 &&
	    strcmp(tracker, "libvirt") == 0) {
		int k = libvirt_undefine_failover(a.connect, vm.name, name);
		if (k < 0 && k != -ECONNREFUSED && k != -EEXIST && k != -EACCES) {
			log_error("test failover '%s' of VM %s stays: its libvirt domain could not "
				  "be undefined",
				  name, vm.name);
			return 1;
		}
	}
	if (r >= 0)
		r = drop_failover(v, &vm, &f, "test-failover-cleanup");
	if (r < 0)
		return log_error_errno(r, "cannot clean up test failover '%s'", name), 1;
	fprintf(stderr, "Test failover '%s' of VM %s removed.\n", name, vm.name);
	return 0;
}

struct active_ctx {
	struct ferry_failover found;
	int have;
};

static int find_active(const struct ferry_failover *f, void *userdata)
{
	struct active_ctx *ac = userdata;
	if (f->kind == FERRY_FAILOVER_REAL) {
		ac->found = *f;
		ac->have = 1;
	}
	return 0;
}

static int real_failover(struct ferry_vault *v, const struct ferry_vm *vm,
			 struct ferry_failover *ret)
{
	struct active_ctx ac = { 0 };
	int r = ferry_catalog_failover_list(ferry_vault_catalog(v), vm->id, find_active, &ac);
	if (r < 0)
		return r;
	if (!ac.have)
		return -ENOENT;
	*ret = ac.found;
	return 0;
}

static const char failover_help[] =
	"Usage: ferry failover --vault DIR VM [--recovery-point ID|latest|latest-processed|\n"
	"         latest-app-consistent] [--name NAME] [--accel A[:B]]\n"
	"       ferry failover --vault DIR --group GROUP [--recovery-point ID|latest|\n"
	"         latest-app-consistent] [--name NAME] [--accel A[:B]]\n"
	"\n"
	"Fails VM over to the target: a writable clone of the chosen point on the\n"
	"target network, subnet, resource group and availability set, and stops\n"
	"replication of the VM. With latest-processed (the default), segments still\n"
	"in the cache are applied first. Then 'ferry change-recovery-point' may\n"
	"pick another point and 'ferry commit' makes it final. With --group, every\n"
	"VM of the consistency group at one group point (default: latest, after the\n"
	"segments waiting for every VM are applied), or none of them if one cannot.\n";

int cmd_failover(int argc, char **argv)
{
	struct fo_args a = { 0 };
	int r = parse_fo(argc, argv, failover_help, &a);
	if (r >= 0)
		return r;
	if (a.network) {
		log_error("a failover uses the target network; --network is for test failovers");
		return 2;
	}
	if (a.group)
		return group_verb(&a, FOSTATE_FAILOVER);
	/* Checked before the wait for the lock, and again once it is held. */
	_cleanup_(ferry_vault_freep) struct ferry_vault *v = NULL;
	struct ferry_vm vm;
	enum ferry_vm_state next;
	if (open_vault(a.o.vault, 0, &v) < 0 || get_vm(v, a.vm, &vm) < 0 ||
	    fostate_require(v, &vm, FOSTATE_FAILOVER, &next) < 0)
		return 1;
	_cleanup_close_ int lock = -1;
	r = maint_writer_lock_wait(a.o.vault, 60, &lock);
	if (r < 0)
		return log_error_errno(r, "cannot lock vault %s", a.o.vault), 1;
	if (get_vm(v, a.vm, &vm) < 0 || fostate_require(v, &vm, FOSTATE_FAILOVER, &next) < 0)
		return 1;

	struct ferry_catalog *c = ferry_vault_catalog(v);
	struct ferry_failover f = { .vm_id = vm.id,
				    .kind = FERRY_FAILOVER_REAL,
				    .state = FERRY_FAILOVER_ACTIVE,
				    .created_ns = ferry_now_ns() };
	snprintf(f.name, sizeof(f.name), "%s", a.name ?: "failover");
	snprintf(f.accel, sizeof(f.accel), "%s", a.accel ?: "kvm:tcg");
	if (name_free_or_explain(v, &vm, &f, a.o.vault) < 0)
		return 1;

	const char *spec = a.point ?: "latest-processed";
	if (strcmp(spec, "latest-processed") == 0) {
		r = replicate_vm(v, &vm, NULL);
		if (r < 0)
			log_warning(
				"VM %s: not every waiting segment could be applied; failing over "
				"to the newest state that was",
				vm.name);
		else if (r > 0)
			fprintf(stderr, "Applied %d waiting segment(s) first.\n", r);
		/* A refused segment leaves it in error, still with its state. */
		if (get_vm(v, a.vm, &vm) < 0 ||
		    fostate_require(v, &vm, FOSTATE_FAILOVER, &next) < 0)
			return 1;
	}
	ferry_catalog_resource_get(c, vm.id, "target-network", f.network, sizeof(f.network));
	ferry_catalog_resource_get(c, vm.id, "target-subnet", f.subnet, sizeof(f.subnet));

	struct choice ch;
	r = record_failover(v, &vm, &f, spec, &ch, "failover", next);
	if (r == -ENOENT)
		return 1; /* resolve_point said why */
	if (r < 0)
		return log_error_errno(r, "cannot fail over VM %s", vm.name), 1;
	print_where(&vm, &f, &ch);
	fprintf(stderr,
		"Replication of VM %s is stopped. Commit with: ferry commit --vault %s %s\n",
		vm.name, a.o.vault, vm.name);
	return 0;
}

/* The VM's uncommitted failover, if verb may run on it, or an error
 * saying why not. */
static int open_failed_over(struct fo_args *a, enum fostate_verb verb, struct ferry_vault **ret_v,
			    struct ferry_vm *vm, struct ferry_failover *f,
			    enum ferry_vm_state *ret_next)
{
	_cleanup_(ferry_vault_freep) struct ferry_vault *v = NULL;
	if (open_vault(a->o.vault, 0, &v) < 0 || get_vm(v, a->vm, vm) < 0 ||
	    fostate_require(v, vm, verb, ret_next) < 0)
		return -EINVAL;
	int r = real_failover(v, vm, f);
	if (r < 0) {
		log_error("VM %s is failed over but its failover is missing from vault %s: "
			  "run 'ferry status --vault %s' and 'ferry jobs' to see what happened",
			  vm->name, a->o.vault, a->o.vault);
		return -EINVAL;
	}
	*ret_v = TAKE_PTR(v);
	return 0;
}

/*
 * Inside the caller's write transaction, which also checks that the VM is
 * still failed over: replaces failover f by a clone of spec's point (its
 * roots read in the transaction that clones them, see record_failover).
 * note, if not NULL, ends the job's detail. Logs why it fails.
 */
static int swap_point_in(struct ferry_vault *v, struct ferry_vm *vm, const struct ferry_failover *f,
			 const char *spec, struct ferry_failover *nf, struct choice *ch,
			 const char *note)
{
	struct ferry_catalog *c = ferry_vault_catalog(v);
	*nf = *f;
	int r = fostate_recheck(c, vm, FERRY_VM_FAILED_OVER);
	if (r >= 0)
		r = resolve_point(v, vm, spec, ch);
	if (r < 0)
		return r; /* said why */
	snprintf(nf->point_name, sizeof(nf->point_name), "%s", ch->name);
	nf->point_time_ns = ch->time_ns;
	char detail[200];
	snprintf(detail, sizeof(detail), "%s (seq %llu)%s", ch->name, (unsigned long long)ch->seq,
		 note ?: "");
	r = ferry_catalog_failover_delete(c, f->id);
	if (r >= 0)
		r = ferry_catalog_failover_add(c, nf, ch->disks, ch->ndisks);
	if (r >= 0)
		r = ferry_catalog_job_add(c, vm->id, "change-recovery-point", "succeeded", detail,
					  NULL);
	if (r < 0)
		return log_error_errno(r, "cannot change the recovery point of VM %s", vm->name);
	return 0;
}

/* swap_point_in in a write transaction of its own. */
static int swap_point(struct ferry_vault *v, struct ferry_vm *vm, const struct ferry_failover *f,
		      const char *spec, struct ferry_failover *nf, struct choice *ch)
{
	struct ferry_catalog *c = ferry_vault_catalog(v);
	int r = ferry_catalog_begin(c);
	if (r < 0)
		return log_error_errno(r, "cannot change the recovery point of VM %s", vm->name);
	r = swap_point_in(v, vm, f, spec, nf, ch, NULL);
	if (r < 0) {
		ferry_catalog_rollback(c);
		return r; /* said why */
	}
	r = ferry_catalog_commit(c);
	if (r < 0)
		return log_error_errno(r, "cannot change the recovery point of VM %s", vm->name);
	return 0;
}

int cmd_change_recovery_point(int argc, char **argv)
{
	struct fo_args a = { 0 };
	int r = parse_fo(
		argc, argv,
		"Usage: ferry change-recovery-point --vault DIR VM --recovery-point ID\n"
		"       ferry change-recovery-point --vault DIR --group GROUP --recovery-point ID\n\n"
		"Before commit, replaces the failed-over VM's disks with a clone of another\n"
		"recovery point. What was written into the old clone is discarded.\n",
		&a);
	if (r >= 0)
		return r;
	if (!a.point) {
		log_error("--recovery-point is required");
		return 2;
	}
	if (a.group)
		return group_verb(&a, FOSTATE_CHANGE_RECOVERY_POINT);
	_cleanup_(ferry_vault_freep) struct ferry_vault *v = NULL;
	struct ferry_vm vm;
	struct ferry_failover f, nf;
	struct choice ch;
	if (open_failed_over(&a, FOSTATE_CHANGE_RECOVERY_POINT, &v, &vm, &f, NULL) < 0 ||
	    swap_point(v, &vm, &f, a.point, &nf, &ch) < 0)
		return 1;
	fprintf(stderr, "Failover '%s' of VM %s now runs from %s (seq %llu).\n", nf.name, vm.name,
		ch.name, (unsigned long long)ch.seq);
	return 0;
}

/* Inside the caller's write transaction, which also checks that the VM is
 * still failed over: makes failover f final; the VM goes to next. */
static int commit_in(struct ferry_catalog *c, struct ferry_vm *vm, struct ferry_failover *f,
		     enum ferry_vm_state next)
{
	int r = fostate_recheck(c, vm, FERRY_VM_FAILED_OVER);
	if (r < 0)
		return r; /* said why */
	f->state = FERRY_FAILOVER_COMMITTED;
	vm->state = next;
	r = ferry_catalog_failover_update(c, f);
	if (r >= 0)
		r = ferry_catalog_vm_update(c, vm);
	if (r >= 0)
		r = ferry_catalog_job_add(c, vm->id, "commit", "succeeded", f->point_name, NULL);
	return r;
}

int cmd_commit(int argc, char **argv)
{
	struct fo_args a = { 0 };
	int r = parse_fo(argc, argv,
			 "Usage: ferry commit --vault DIR VM\n"
			 "       ferry commit --vault DIR --group GROUP\n\n"
			 "Makes a failover final: its recovery point can no longer be changed.\n",
			 &a);
	if (r >= 0)
		return r;
	if (a.group)
		return group_verb(&a, FOSTATE_COMMIT);
	_cleanup_(ferry_vault_freep) struct ferry_vault *v = NULL;
	struct ferry_vm vm;
	struct ferry_failover f;
	enum ferry_vm_state next;
	if (open_failed_over(&a, FOSTATE_COMMIT, &v, &vm, &f, &next) < 0)
		return 1;
	struct ferry_catalog *c = ferry_vault_catalog(v);
	r = ferry_catalog_begin(c);
	if (r < 0)
		return log_error_errno(r, "cannot commit the failover of VM %s", vm.name), 1;
	r = commit_in(c, &vm, &f, next);
	if (r >= 0)
		r = ferry_catalog_commit(c);
	else
		ferry_catalog_rollback(c);
	if (r == -ESTALE)
		return 1; /* said why */
	if (r < 0)
		return log_error_errno(r, "cannot commit the failover of VM %s", vm.name), 1;
	fprintf(stderr, "Failover of VM %s committed at %s.\n", vm.name, f.point_name);
	return 0;
}

/* ---- consistency groups ---- */

/* One VM of a group verb, and what the verb does to it. */
struct member {
	struct ferry_vm vm;
	enum ferry_vm_state next;
	struct ferry_failover f;  /* made, removed, replaced or committed */
	struct ferry_failover nf; /* change-recovery-point: the replacement */
	struct choice ch;
	const char *point; /* its point of the group point */
	/* Not in the group at the group point (it joined later: no point of
	 * it, no failover made at it): the verb leaves it alone. */
	int out;
};

/* Whether verb may run on the member, and what it needs: the failover to
 * make (its name free) or the one it acts on. Logs why not. */
static int member_check(struct ferry_vault *v, const struct fo_args *a, enum fostate_verb verb,
			struct member *m)
{
	struct ferry_catalog *c = ferry_vault_catalog(v);
	struct ferry_vm *vm = &m->vm;
	int r = fostate_require(v, vm, verb, &m->next);
	if (r < 0)
		return r;
	switch (verb) {
	case FOSTATE_TEST_FAILOVER:
	case FOSTATE_FAILOVER: {
		int test = verb == FOSTATE_TEST_FAILOVER;
		m->f = (struct ferry_failover){ .vm_id = vm->id,
						.kind = test ? FERRY_FAILOVER_TEST :
							       FERRY_FAILOVER_REAL,
						.state = FERRY_FAILOVER_ACTIVE,
						.created_ns = ferry_now_ns() };
		snprintf(m->f.name, sizeof(m->f.name), "%s", a->name ?: test ? "test" : "failover");
		snprintf(m->f.accel, sizeof(m->f.accel), "%s", a->accel ?: "kvm:tcg");
		char tn[FERRY_NAME_MAX + 1] = "";
		ferry_catalog_resource_get(c, vm->id, "target-network", tn, sizeof(tn));
		ferry_catalog_resource_get(c, vm->id, "target-subnet", m->f.subnet,
					   sizeof(m->f.subnet));
		if (!test)
			snprintf(m->f.network, sizeof(m->f.network), "%s", tn);
		else if (a->network)
			snprintf(m->f.network, sizeof(m->f.network), "%s", a->network);
		else
			snprintf(m->f.network, sizeof(m->f.network), "%.59s-test", tn);
		return name_free_or_explain(v, vm, &m->f, a->o.vault);
	}
	case FOSTATE_TEST_FAILOVER_CLEANUP: {
		const char *name = a->name ?: "test";
		r = ferry_catalog_failover_get(c, vm->id, name, &m->f);
		if (r == -ENOENT || (r >= 0 && m->f.kind != FERRY_FAILOVER_TEST)) {
			log_error("VM %s has no test failover named '%s'", vm->name, name);
			return -ENOENT;
		}
		return r < 0 ? log_error_errno(r, "cannot read the failovers of VM %s", vm->name) :
			       0;
	}
	default:
		r = real_failover(v, vm, &m->f);
		if (r == -ENOENT)
			log_error("VM %s is failed over but its failover is missing from vault %s",
				  vm->name, a->o.vault);
		else if (r < 0)
			log_error_errno(r, "cannot read the failovers of VM %s", vm->name);
		return r;
	}
}

/* The verb on one member, inside the group's one write transaction. */
static int member_step(struct ferry_vault *v, enum fostate_verb verb, struct member *m,
		       const char *note)
{
	struct ferry_catalog *c = ferry_vault_catalog(v);
	switch (verb) {
	case FOSTATE_TEST_FAILOVER:
	case FOSTATE_FAILOVER:
		return record_failover_in(v, &m->vm, &m->f, m->point, &m->ch,
					  fostate_verb_name(verb), m->next, note);
	case FOSTATE_TEST_FAILOVER_CLEANUP:
		return drop_failover_in(c, &m->vm, &m->f, fostate_verb_name(verb));
	case FOSTATE_CHANGE_RECOVERY_POINT:
		return swap_point_in(v, &m->vm, &m->f, m->point, &m->nf, &m->ch, note);
	default:
		return commit_in(c, &m->vm, &m->f, m->next);
	}
}

/* Reads the group's members and rounds into *g and fills m, one per
 * member; logs why not. */
static int load_members(struct ferry_vault *v, const char *group, struct grouppoint_set **g,
			struct member **m)
{
	*g = grouppoint_free(*g);
	int r = grouppoint_load(ferry_vault_catalog(v), group, g);
	if (r == -ENOENT)
		return log_error("no VM in group %s in vault %s (ferry enable-replication "
				 "--group %s puts VMs there)",
				 group, ferry_vault_dir(v), group),
		       r;
	if (r < 0)
		return log_error_errno(r, "cannot read group %s", group);
	free(*m);
	*m = calloc((*g)->nmembers, sizeof(**m));
	if (!*m)
		return log_error_errno(-ENOMEM, "out of memory");
	for (size_t i = 0; i < (*g)->nmembers; i++)
		(*m)[i].vm = (*g)->members[i];
	return 0;
}

/* The members the verb acts on: all but those out. */
static size_t acting(const struct grouppoint_set *g, const struct member *m)
{
	size_t n = 0;
	for (size_t i = 0; i < g->nmembers; i++)
		n += !m[i].out;
	return n;
}

/* Every member checked; a refusal of any changes nothing. */
static int check_members(struct ferry_vault *v, const struct fo_args *a, enum fostate_verb verb,
			 const struct grouppoint_set *g, struct member *m)
{
	size_t refused = 0;
	for (size_t i = 0; i < g->nmembers; i++) {
		if (m[i].out)
			continue;
		if (m[i].point && !m[i].point[0]) {
			/* Failed over, but it joined after that point. */
			log_error("VM %s joined group %s after that group point: no point of it",
				  m[i].vm.name, g->group);
			refused++;
			continue;
		}
		refused += member_check(v, a, verb, &m[i]) < 0;
	}
	if (refused) {
		log_error("group %s: %s refused for %zu of its %zu VMs (above); nothing was "
			  "changed on any of them",
			  g->group, fostate_verb_name(verb), refused, acting(g, m));
		return -EPERM;
	}
	return 0;
}

/* The group point of spec into *ret and each member's point of it. A
 * member that was not in the group then has none, and is left out; but
 * change-recovery-point cannot leave a failed over member at another
 * point than the rest (check_members() refuses it). Logs why not, unless
 * quiet. */
static int pick_round(struct ferry_vault *v, enum fostate_verb verb, const char *spec,
		      const struct grouppoint_set *g, struct member *m,
		      const struct grouppoint_round **ret, int quiet)
{
	char msg[1024];
	int r = grouppoint_find(g, spec, ret, msg, sizeof(msg));
	if (r < 0 && !quiet)
		log_error("%s", msg);
	if (r < 0)
		return r;
	for (size_t i = 0; i < g->nmembers; i++) {
		struct ferry_failover f;
		m[i].point = (*ret)->points[i].name;
		m[i].out = !(*ret)->points[i].id && (verb != FOSTATE_CHANGE_RECOVERY_POINT ||
						     real_failover(v, &m[i].vm, &f) == -ENOENT);
	}
	return 0;
}

/* For a verb on the failovers a group verb made (test-failover-cleanup,
 * commit): a member without one that joined the group after the point
 * they were made at was left out then, and is now. */
static int mark_later_members(struct ferry_vault *v, const struct fo_args *a,
			      enum fostate_verb verb, const struct grouppoint_set *g,
			      struct member *m)
{
	struct ferry_catalog *c = ferry_vault_catalog(v);
	int64_t point_ns = INT64_MIN;
	for (size_t i = 0; i < g->nmembers; i++) {
		struct ferry_failover f;
		int r;
		if (verb == FOSTATE_TEST_FAILOVER_CLEANUP) {
			r = ferry_catalog_failover_get(c, m[i].vm.id, a->name ?: "test", &f);
			if (r >= 0 && f.kind != FERRY_FAILOVER_TEST)
				r = -ENOENT;
		} else {
			r = real_failover(v, &m[i].vm, &f);
		}
		if (r < 0 && r != -ENOENT)
			return log_error_errno(r, "cannot read the failovers of VM %s",
					       m[i].vm.name);
		/* out for now: it has none */
		m[i].out = r < 0;
		if (r >= 0)
			point_ns = MAX(point_ns, f.point_time_ns);
	}
	for (size_t i = 0; i < g->nmembers; i++)
		m[i].out = m[i].out && point_ns != INT64_MIN && g->since[i] > point_ns;
	return 0;
}

/* Before a failover: what waits in the cache for every member, so that the
 * newest group point is as new as it can be. Holds the writer lock. */
static int apply_waiting(struct ferry_vault *v, const struct grouppoint_set *g, struct member *m)
{
	for (size_t i = 0; i < g->nmembers; i++) {
		int r = replicate_vm(v, &m[i].vm, NULL);
		if (r < 0)
			log_warning("VM %s: not every waiting segment could be applied",
				    m[i].vm.name);
		else if (r > 0)
			fprintf(stderr, "VM %s: applied %d waiting segment(s) first.\n",
				m[i].vm.name, r);
	}
	return 0;
}

static void group_report(const struct fo_args *a, enum fostate_verb verb,
			 const struct grouppoint_set *g, const struct grouppoint_round *rd,
			 const struct member *m)
{
	char when[FERRY_TIME_STRING_SIZE];
	if (rd) {
		ferry_format_time(rd->time_ns, when, sizeof(when));
		fprintf(stderr, "Group %s: %s of its %zu VMs at group point %s (round %llu, %s).\n",
			g->group, fostate_verb_name(verb), acting(g, m), rd->id,
			(unsigned long long)rd->round, when);
	}
	for (size_t i = 0; i < g->nmembers; i++) {
		const struct member *mm = &m[i];
		if (mm->out) {
			fprintf(stderr, "VM %s joined group %s after %s: left as it is%s.\n",
				mm->vm.name, g->group,
				rd ? "that group point" : "the point of its failovers",
				verb == FOSTATE_FAILOVER ? " (it goes on replicating)" : "");
			continue;
		}
		switch (verb) {
		case FOSTATE_TEST_FAILOVER:
		case FOSTATE_FAILOVER:
			printf("%s %s\n", mm->vm.name, mm->f.name);
			print_clone(&mm->vm, &mm->f, &mm->ch);
			break;
		case FOSTATE_TEST_FAILOVER_CLEANUP:
			fprintf(stderr, "Test failover '%s' of VM %s removed.\n", mm->f.name,
				mm->vm.name);
			break;
		case FOSTATE_CHANGE_RECOVERY_POINT:
			fprintf(stderr, "Failover '%s' of VM %s now runs from %s (seq %llu).\n",
				mm->nf.name, mm->vm.name, mm->ch.name,
				(unsigned long long)mm->ch.seq);
			break;
		default:
			fprintf(stderr, "Failover of VM %s committed at %s.\n", mm->vm.name,
				mm->f.point_name);
		}
	}
	if (verb == FOSTATE_FAILOVER)
		fprintf(stderr,
			"Replication of the VMs of group %s is stopped. Commit with: ferry commit "
			"--vault %s --group %s\n",
			g->group, a->o.vault, g->group);
}

/*
 * A failover verb on every VM of group a->group at one group point: every
 * member is checked first (fostate) and one refusal changes nothing; then
 * the per-VM step of each, all in one catalog transaction, so that the
 * members change together or not at all.
 */
static int group_verb(struct fo_args *a, enum fostate_verb verb)
{
	int with_point = verb == FOSTATE_TEST_FAILOVER || verb == FOSTATE_FAILOVER ||
			 verb == FOSTATE_CHANGE_RECOVERY_POINT;
	const char *spec = a->point ?: "latest";
	if (with_point && strcmp(spec, "latest-processed") == 0) {
		log_error("--recovery-point latest-processed is each VM's newest applied state, "
			  "which is no instant the VMs of group %s share: use latest (the newest "
			  "group point), latest-app-consistent or a group point id (ferry "
			  "recovery-points --vault %s --group %s)",
			  a->group, a->o.vault, a->group);
		return 2;
	}
	_cleanup_(ferry_vault_freep) struct ferry_vault *v = NULL;
	_cleanup_(grouppoint_freep) struct grouppoint_set *g = NULL;
	_cleanup_free_ struct member *m = NULL;
	/* Who takes part depends on the group point: a member that joined
	 * the group after it is left out. A failover looks for its group
	 * point again after the apply below, which may bring the first. */
	const struct grouppoint_round *rd = NULL;
	if (open_vault(a->o.vault, 0, &v) < 0 || load_members(v, a->group, &g, &m) < 0)
		return 1;
	int failover = verb == FOSTATE_FAILOVER;
	int r = with_point ? pick_round(v, verb, spec, g, m, &rd, failover) :
			     mark_later_members(v, a, verb, g, m);
	if ((r < 0 && !failover) || (r >= 0 && check_members(v, a, verb, g, m) < 0))
		return 1;
	_cleanup_close_ int lock = -1;
	if (failover) {
		r = maint_writer_lock_wait(a->o.vault, 60, &lock);
		if (r < 0)
			return log_error_errno(r, "cannot lock vault %s", a->o.vault), 1;
		/* Checked again once the lock is held, and after the apply: a
		 * refused segment leaves a VM in error, still with its state;
		 * latest may be a newer group point now. */
		if (load_members(v, a->group, &g, &m) < 0 || apply_waiting(v, g, m) < 0 ||
		    load_members(v, a->group, &g, &m) < 0 ||
		    pick_round(v, verb, spec, g, m, &rd, 0) < 0 ||
		    check_members(v, a, verb, g, m) < 0)
			return 1;
	}
	char note[160] = "";
	if (with_point)
		snprintf(note, sizeof(note), ", group %s point %s", g->group, rd->id);

	struct ferry_catalog *c = ferry_vault_catalog(v);
	size_t failed = g->nmembers;
	r = ferry_catalog_begin(c);
	for (size_t i = 0; r >= 0 && i < g->nmembers; i++)
		if (!m[i].out && (r = member_step(v, verb, &m[i], note)) < 0)
			failed = i;
	if (r >= 0)
		r = ferry_catalog_commit(c);
	else
		ferry_catalog_rollback(c);
	if (r < 0) {
		if (r != -ENOENT && r != -ESTALE)
			log_error_errno(r, "group %s: %s failed%s%s", g->group,
					fostate_verb_name(verb),
					failed < g->nmembers ? " at VM " : "",
					failed < g->nmembers ? m[failed].vm.name : "");
		log_error("group %s: nothing was changed on any of its VMs (they change together "
			  "or not at all); run the command again once the reason above is gone",
			  g->group);
		return 1;
	}
	group_report(a, verb, g, rd, m);
	return 0;
}

static int print_job(const struct ferry_job *j, void *userdata)
{
	char start[32];
	ferry_format_time(j->started_ns, start, sizeof(start));
	printf("%-5lld %s  %-24s %-22s %-10s %s\n", (long long)j->id, start, j->vm[0] ? j->vm : "-",
	       j->kind, j->state, j->detail);
	return 0;
}

int cmd_jobs(int argc, char **argv)
{
	struct opts o = { 0 };
	if (parse_common(argc, argv, &o,
			 "Usage: ferry jobs --vault DIR\n\n"
			 "The history of failover operations, oldest first: id, start time, VM,\n"
			 "kind, state, detail.\n") < 0)
		return 2;
	if (o.help)
		return 0;
	if (optind != argc) {
		log_error("usage: ferry jobs --vault DIR");
		return 2;
	}
	_cleanup_(ferry_vault_freep) struct ferry_vault *v = NULL;
	if (open_vault(o.vault, 1, &v) < 0)
		return 1;
	int r = ferry_catalog_job_list(ferry_vault_catalog(v), print_job, NULL);
	if (r < 0)
		return log_error_errno(r, "cannot list jobs"), 1;
	return 0;
}
