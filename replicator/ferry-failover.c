/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Failover verbs: test failover and its cleanup, failover, change of the
 * recovery point, commit, and the job history. A failover is a row in the
 * catalog naming a writable clone of a recovery point's disks; ferryfs
 * shows it under MOUNT/<vm>/failovers/<name>/ with the VM's definition next
 * to the images. Nothing is copied, so a failover is ready at once whatever
 * the disk size.
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
};

static int parse_fo(int argc, char **argv, const char *help, struct fo_args *a)
{
	enum {
		O_VAULT = 0x100,
		O_POINT,
		O_NETWORK,
		O_NAME,
		O_ACCEL
	};
	static const struct option longopts[] = {
		{ "vault", required_argument, NULL, O_VAULT },
		{ "recovery-point", required_argument, NULL, O_POINT },
		{ "network", required_argument, NULL, O_NETWORK },
		{ "name", required_argument, NULL, O_NAME },
		{ "accel", required_argument, NULL, O_ACCEL },
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
		case 'h':
			fputs(help, stdout);
			return 0;
		default:
			return 2;
		}
	}
	if (!a->o.vault || optind + 1 != argc) {
		log_error("expected --vault DIR and one VM name (see --help)");
		return 2;
	}
	a->vm = argv[optind];
	const char *names[] = { a->network, a->name };
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
 * Resolves spec (resolve_point) and adds the failover, its job and event,
 * all in one write transaction: the roots the clone starts from are read
 * where nobody can thin the point or collect its data before the clone
 * keeps them alive (GC's rules, docs/architecture.md). The VM must still
 * be in the state it was checked in; it goes to next. ch gets the point.
 */
static int record_failover(struct ferry_vault *v, struct ferry_vm *vm, struct ferry_failover *f,
			   const char *spec, struct choice *ch, const char *job,
			   enum ferry_vm_state next)
{
	struct ferry_catalog *c = ferry_vault_catalog(v);
	int r = ferry_catalog_begin(c);
	if (r < 0)
		return r;
	r = fostate_recheck(c, vm, vm->state);
	if (r >= 0)
		r = resolve_point(v, vm, spec, ch);
	if (r < 0) {
		ferry_catalog_rollback(c);
		return r == -ESTALE ? -ENOENT : r; /* said why */
	}
	snprintf(f->point_name, sizeof(f->point_name), "%s", ch->name);
	f->point_time_ns = ch->time_ns;
	char detail[320];
	snprintf(detail, sizeof(detail), "%s from %s (seq %llu) on network %s/%s", f->name,
		 ch->name, (unsigned long long)ch->seq, f->network, f->subnet);
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
	if (r < 0) {
		ferry_catalog_rollback(c);
		return r;
	}
	return ferry_catalog_commit(c);
}

static void print_where(const struct ferry_vm *vm, const struct ferry_failover *f,
			const struct choice *ch)
{
	printf("%s\n", f->name);
	fprintf(stderr,
		"Clone '%s' of VM %s from %s (seq %llu) is ready on network %s/%s.\n"
		"In any ferryfs mount of this vault: MOUNT/%s/failovers/%s/ holds",
		f->name, vm->name, ch->name, (unsigned long long)ch->seq, f->network, f->subnet,
		vm->name, f->name);
	for (size_t i = 0; i < ch->ndisks; i++)
		fprintf(stderr, " %s.img", ch->disks[i].name);
	fprintf(stderr, " domain.xml qemu.args\n");
}

static const char test_failover_help[] =
	"Usage: ferry test-failover --vault DIR VM [--recovery-point ID|latest|latest-processed|\n"
	"         latest-app-consistent] [--network NET] [--name NAME] [--accel A[:B]]\n"
	"\n"
	"Creates a writable copy-on-write clone of a recovery point's disks in an\n"
	"isolated test network (default TARGET-NETWORK-test), with a VM definition\n"
	"(domain.xml, qemu.args), without touching replication. Prints the clone's\n"
	"name; its images appear in ferryfs under VM/failovers/NAME/.\n"
	"Default point: latest. Default name: test. Default accelerators: kvm:tcg.\n";

int cmd_test_failover(int argc, char **argv)
{
	struct fo_args a = { 0 };
	int r = parse_fo(argc, argv, test_failover_help, &a);
	if (r >= 0)
		return r;
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

static int drop_failover(struct ferry_vault *v, struct ferry_vm *vm, const struct ferry_failover *f,
			 const char *job)
{
	struct ferry_catalog *c = ferry_vault_catalog(v);
	int r = ferry_catalog_begin(c);
	if (r < 0)
		return r;
	r = ferry_catalog_failover_delete(c, f->id);
	if (r >= 0)
		r = ferry_catalog_job_add(c, vm->id, job, "succeeded", f->name, NULL);
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
		"Usage: ferry test-failover-cleanup --vault DIR VM [--name NAME]\n\n"
		"Removes a test failover's clone and VM definition; its data goes at the\n"
		"next garbage collection. Replication is not touched. Default name: test.\n",
		&a);
	if (r >= 0)
		return r;
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
	"\n"
	"Fails VM over to the target: a writable clone of the chosen point on the\n"
	"target network, subnet, resource group and availability set, and stops\n"
	"replication of the VM. With latest-processed (the default), segments still\n"
	"in the cache are applied first. Then 'ferry change-recovery-point' may\n"
	"pick another point and 'ferry commit' makes it final.\n";

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
 * Replaces failover f by a clone of spec's point, in one transaction that
 * also checks that the VM is still failed over. Logs why it fails.
 */
static int swap_point(struct ferry_vault *v, struct ferry_vm *vm, const struct ferry_failover *f,
		      const char *spec, struct ferry_failover *nf, struct choice *ch)
{
	struct ferry_catalog *c = ferry_vault_catalog(v);
	*nf = *f;
	/* The point's roots are read in the transaction that clones them (see
	 * record_failover). */
	int r = ferry_catalog_begin(c);
	if (r < 0)
		return log_error_errno(r, "cannot change the recovery point of VM %s", vm->name);
	r = fostate_recheck(c, vm, FERRY_VM_FAILED_OVER);
	if (r >= 0)
		r = resolve_point(v, vm, spec, ch);
	if (r < 0) {
		ferry_catalog_rollback(c);
		return r; /* said why */
	}
	snprintf(nf->point_name, sizeof(nf->point_name), "%s", ch->name);
	nf->point_time_ns = ch->time_ns;
	char detail[96];
	snprintf(detail, sizeof(detail), "%s (seq %llu)", ch->name, (unsigned long long)ch->seq);
	r = ferry_catalog_failover_delete(c, f->id);
	if (r >= 0)
		r = ferry_catalog_failover_add(c, nf, ch->disks, ch->ndisks);
	if (r >= 0)
		r = ferry_catalog_job_add(c, vm->id, "change-recovery-point", "succeeded", detail,
					  NULL);
	if (r >= 0)
		r = ferry_catalog_commit(c);
	else
		ferry_catalog_rollback(c);
	if (r < 0)
		return log_error_errno(r, "cannot change the recovery point of VM %s", vm->name);
	return 0;
}

int cmd_change_recovery_point(int argc, char **argv)
{
	struct fo_args a = { 0 };
	int r = parse_fo(
		argc, argv,
		"Usage: ferry change-recovery-point --vault DIR VM --recovery-point ID\n\n"
		"Before commit, replaces the failed-over VM's disks with a clone of another\n"
		"recovery point. What was written into the old clone is discarded.\n",
		&a);
	if (r >= 0)
		return r;
	if (!a.point) {
		log_error("--recovery-point is required");
		return 2;
	}
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

int cmd_commit(int argc, char **argv)
{
	struct fo_args a = { 0 };
	int r = parse_fo(argc, argv,
			 "Usage: ferry commit --vault DIR VM\n\n"
			 "Makes a failover final: its recovery point can no longer be changed.\n",
			 &a);
	if (r >= 0)
		return r;
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
	r = fostate_recheck(c, &vm, FERRY_VM_FAILED_OVER);
	if (r < 0) {
		ferry_catalog_rollback(c);
		return 1;
	}
	f.state = FERRY_FAILOVER_COMMITTED;
	vm.state = next;
	r = ferry_catalog_failover_update(c, &f);
	if (r >= 0)
		r = ferry_catalog_vm_update(c, &vm);
	if (r >= 0)
		r = ferry_catalog_job_add(c, vm.id, "commit", "succeeded", f.point_name, NULL);
	if (r >= 0)
		r = ferry_catalog_commit(c);
	else
		ferry_catalog_rollback(c);
	if (r < 0)
		return log_error_errno(r, "cannot commit the failover of VM %s", vm.name), 1;
	fprintf(stderr, "Failover of VM %s committed at %s.\n", vm.name, f.point_name);
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
