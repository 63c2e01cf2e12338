/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * ferry-replicator: the target-site service. For every VM of a vault it
 * takes the segments waiting in the VM's cache in sequence order, applies
 * them (apply.c), acknowledges and deletes them, then thins recovery points
 * and collects garbage (maint.c). One replicator per vault: it holds the
 * vault's writer lock while it runs.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "apply.h"
#include "ferry/cache.h"
#include "ferry/catalog.h"
#include "ferry/log.h"
#include "ferry/util.h"
#include "ferry/vault.h"
#include "maint.h"

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	stop = 1;
}

static void help(void)
{
	printf("Usage: ferry-replicator --vault DIR [--once] [--interval SECONDS] [--verbose]\n"
	       "\n"
	       "Applies change-log segments from each VM's cache to the vault, cuts\n"
	       "recovery points by policy, thins old points and collects garbage.\n"
	       "\n"
	       "  --vault DIR          the vault (made by 'ferry init')\n"
	       "  --once               apply what is waiting now, then exit\n"
	       "  --interval SECONDS   pause between passes (default 10)\n"
	       "  --no-gc              skip garbage collection\n"
	       "  -v, --verbose        log each segment\n"
	       "  -h, --help           show this help\n"
	       "      --version        show the version\n"
	       "\n"
	       "Exit status: 0 when every segment seen was applied, 1 on an error\n"
	       "(a refused segment stays in the cache for inspection).\n");
}

struct vm_list {
	struct ferry_vm *vms;
	size_t n;
};

static int collect_vm(const struct ferry_vm *vm, void *userdata)
{
	struct vm_list *l = userdata;
	struct ferry_vm *n = realloc(l->vms, (l->n + 1) * sizeof(*n));
	if (!n)
		return -ENOMEM;
	l->vms = n;
	l->vms[l->n++] = *vm;
	return 0;
}

/* Records a refused segment on the VM so 'ferry status' shows it. */
static void mark_error(struct ferry_vault *v, const char *vm_name, const char *what)
{
	struct ferry_catalog *c = ferry_vault_catalog(v);
	struct ferry_vm vm;
	if (ferry_catalog_vm_get(c, vm_name, &vm) < 0)
		return;
	if (vm.state == FERRY_VM_ERROR && strcmp(vm.error, what) == 0)
		return;
	vm.state = FERRY_VM_ERROR;
	snprintf(vm.error, sizeof(vm.error), "%s", what);
	if (ferry_catalog_begin(c) < 0)
		return;
	if (ferry_catalog_vm_update(c, &vm) < 0 ||
	    ferry_catalog_event_add(c, vm.id, "error", what) < 0) {
		ferry_catalog_rollback(c);
		return;
	}
	ferry_catalog_commit(c);
}

/* Applies the waiting segments of one VM. Returns the number applied or
 * -errno; stops at the first segment that cannot be applied. */
static int replicate_vm(struct ferry_vault *v, const struct ferry_vm *vm)
{
	struct ferry_cache *cache;
	int r = ferry_cache_open(vm->cache_url, 0, &cache);
	if (r < 0) {
		char what[FERRY_URL_MAX + 64];
		snprintf(what, sizeof(what), "cannot open cache %s: %s", vm->cache_url,
			 strerror(-r));
		mark_error(v, vm->name, what);
		return log_error_errno(r, "VM %s: cannot open cache %s", vm->name, vm->cache_url);
	}

	/* A crash between commit and ack leaves the ack behind the catalog. */
	struct ferry_ack ack;
	if (vm->applied_seq > 0 && ferry_cache_get_ack(cache, vm->name, &ack) >= 0 &&
	    ack.seq < vm->applied_seq) {
		ack = (struct ferry_ack){ vm->applied_seq, vm->applied_digest };
		r = ferry_cache_put_ack(cache, vm->name, &ack);
		if (r < 0)
			log_warning_errno(r, "VM %s: cannot refresh the ack in %s", vm->name,
					  vm->cache_url);
	}

	uint64_t *seqs = NULL, bytes;
	size_t n = 0;
	r = ferry_cache_list_segments(cache, vm->name, &seqs, &n, &bytes);
	if (r < 0) {
		log_error_errno(r, "VM %s: cannot list segments in %s", vm->name, vm->cache_url);
		goto out;
	}

	int applied = 0;
	for (size_t i = 0; i < n && !stop; i++) {
		char label[FERRY_URL_MAX + 128];
		snprintf(label, sizeof(label), "%s/segments/%s/%016llx.seg", ferry_cache_url(cache),
			 vm->name, (unsigned long long)seqs[i]);

		/* Left over from a crash between commit and delete: the catalog
		 * has it, whatever state the file is in. */
		if (seqs[i] <= vm->applied_seq) {
			r = ferry_cache_delete_segment(cache, vm->name, seqs[i]);
			if (r < 0) {
				log_error_errno(r, "VM %s: cannot delete applied segment %s",
						vm->name, label);
				break;
			}
			log_info("VM %s: segment %llu was applied before; removed from the cache",
				 vm->name, (unsigned long long)seqs[i]);
			continue;
		}

		void *buf;
		size_t len;
		r = ferry_cache_get_segment(cache, vm->name, seqs[i], &buf, &len);
		if (r < 0) {
			log_error_errno(r, "VM %s: cannot read segment %s", vm->name, label);
			break;
		}
		struct apply_result res;
		char msg[512];
		r = apply_segment(v, vm->name, seqs[i], buf, len, &res, msg, sizeof(msg));
		free(buf);
		if (r < 0) {
			char what[sizeof(label) + sizeof(msg) + 32];
			snprintf(what, sizeof(what), "segment %s refused: %s", label, msg);
			log_error_errno(r, "VM %s: %s", vm->name, what);
			mark_error(v, vm->name, what);
			break;
		}

		/* The catalog holds the segment now: acknowledge, then delete.
		 * A crash between the steps repeats them harmlessly. */
		struct ferry_vm now;
		r = ferry_catalog_vm_get(ferry_vault_catalog(v), vm->name, &now);
		if (r >= 0) {
			ack = (struct ferry_ack){ now.applied_seq, now.applied_digest };
			r = ferry_cache_put_ack(cache, vm->name, &ack);
		}
		if (r >= 0)
			r = ferry_cache_delete_segment(cache, vm->name, seqs[i]);
		if (r < 0) {
			log_error_errno(r, "VM %s: cannot acknowledge segment %s", vm->name, label);
			break;
		}
		if (res.already_applied)
			log_info("VM %s: segment %llu was applied before; removed from the cache",
				 vm->name, (unsigned long long)res.seq);
		else {
			applied++;
			log_debug("VM %s: applied segment %llu: %llu data bytes, %llu stored, "
				  "%u marker(s), %u point(s)",
				  vm->name, (unsigned long long)res.seq,
				  (unsigned long long)res.data_bytes,
				  (unsigned long long)res.stored_bytes, res.markers, res.points);
			if (res.points)
				log_info("VM %s: %u new recovery point(s) at segment %llu",
					 vm->name, res.points, (unsigned long long)res.seq);
		}
	}
	if (r >= 0)
		r = applied;
out:
	free(seqs);
	ferry_cache_free(cache);
	return r;
}

/* Garbage is collected when thinning removed points, and at least hourly
 * (and at start) so packs left by a crash do not linger. */
#define GC_EVERY_NS (3600LL * 1000000000LL)

static int run_pass(struct ferry_vault *v, int do_gc, int64_t *last_gc_ns)
{
	struct vm_list l = { 0 };
	int r = ferry_catalog_vm_list(ferry_vault_catalog(v), collect_vm, &l);
	if (r < 0) {
		free(l.vms);
		return log_error_errno(r, "cannot list VMs");
	}
	int failed = 0;
	for (size_t i = 0; i < l.n && !stop; i++)
		if (replicate_vm(v, &l.vms[i]) < 0)
			failed = 1;
	free(l.vms);

	unsigned thinned = 0;
	r = maint_thin(v, ferry_now_ns(), &thinned);
	if (r < 0)
		return log_error_errno(r, "thinning recovery points failed");
	if (thinned)
		log_info("retention removed %u recovery point(s)", thinned);
	if (do_gc && (thinned || ferry_now_ns() - *last_gc_ns >= GC_EVERY_NS)) {
		*last_gc_ns = ferry_now_ns();
		struct gc_result g;
		r = maint_gc(v, &g);
		if (r < 0)
			return log_error_errno(r, "garbage collection failed");
		log_info("gc: %llu pack(s) deleted, %llu rewritten, %llu bytes freed",
			 (unsigned long long)g.packs_deleted, (unsigned long long)g.packs_rewritten,
			 (unsigned long long)g.bytes_freed);
	}
	return failed ? -EIO : 0;
}

int main(int argc, char **argv)
{
	enum {
		OPT_VERSION = 0x100,
		OPT_NO_GC
	};
	static const struct option opts[] = {
		{ "vault", required_argument, NULL, 'V' },
		{ "once", no_argument, NULL, 'o' },
		{ "interval", required_argument, NULL, 'i' },
		{ "no-gc", no_argument, NULL, OPT_NO_GC },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, OPT_VERSION },
		{},
	};
	const char *vault_dir = NULL;
	int once = 0, do_gc = 1;
	long interval = 10;

	log_set_program("ferry-replicator");
	int c;
	while ((c = getopt_long(argc, argv, "vh", opts, NULL)) >= 0) {
		switch (c) {
		case 'V':
			vault_dir = optarg;
			break;
		case 'o':
			once = 1;
			break;
		case 'i': {
			char *end;
			interval = strtol(optarg, &end, 10);
			if (*end || interval < 1 || interval > 86400) {
				log_error("--interval wants seconds between 1 and 86400, not '%s'",
					  optarg);
				return 2;
			}
			break;
		}
		case OPT_NO_GC:
			do_gc = 0;
			break;
		case 'v':
			log_set_max_level(LOG_DEBUG);
			break;
		case 'h':
			help();
			return 0;
		case OPT_VERSION:
			printf("ferry-replicator %s\n", FERRY_VERSION);
			return 0;
		default:
			return 2;
		}
	}
	if (!vault_dir || optind != argc) {
		log_error("usage: ferry-replicator --vault DIR [--once] (see --help)");
		return 2;
	}

	_cleanup_close_ int lock_fd = -1;
	int r = maint_lock(vault_dir, &lock_fd);
	if (r == -EBUSY) {
		log_error("another replicator or maintenance job holds vault %s", vault_dir);
		return 1;
	}
	if (r < 0) {
		log_error_errno(r, "cannot lock vault %s", vault_dir);
		return 1;
	}
	struct ferry_vault *v;
	r = ferry_vault_open(vault_dir, 0, &v);
	if (r < 0) {
		log_error_errno(r, "cannot open vault %s", vault_dir);
		return 1;
	}

	struct sigaction sa = { .sa_handler = on_signal };
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);

	int64_t last_gc_ns = 0;
	for (;;) {
		r = run_pass(v, do_gc, &last_gc_ns);
		if (once || stop)
			break;
		struct timespec ts = { interval, 0 };
		while (!stop && nanosleep(&ts, &ts) < 0 && errno == EINTR)
			;
		if (stop)
			break;
	}
	ferry_vault_free(v);
	return r < 0 ? 1 : 0;
}
