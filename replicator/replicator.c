/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * ferry-replicator: the target-site service. For every VM of a vault it
 * takes the segments waiting in the VM's cache in sequence order, applies
 * them (apply.c), acknowledges and deletes them, then thins recovery points
 * and collects garbage (maint.c). Between passes it waits (wait.h) for a
 * segment to arrive, watching local caches with inotify and polling those
 * on object storage every --poll-interval, so that a segment is applied
 * about a second after it arrives; --interval bounds the wait, so nothing
 * is missed if a wake-up is. One replicator per vault: it holds the
 * vault's replicator flock while it runs, and the writer flock during each
 * pass. One replicator per store, too: where the store is remote, another
 * vault directory may be attached to the same container or bucket, so the
 * replicator also holds a lease on the store itself (an Azure blob lease or
 * an S3 lock object, ferry_blobs_lock_*), renewed by a thread every 20 s and
 * before every pass (unless renewed in the last 5 s: passes come as often
 * as segments); a renewal that fails stops it, because a lease it no longer
 * holds may already be another replicator's.
 */
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "env.h"
#include "ferry/blobs.h"
#include "ferry/cache.h"
#include "ferry/catalog.h"
#include "ferry/crypto.h"
#include "ferry/log.h"
#include "ferry/store.h"
#include "ferry/util.h"
#include "ferry/vault.h"
#include "fostate.h"
#include "maint.h"
#include "monitor.h"
#include "replicate.h"
#include "wait.h"

static volatile sig_atomic_t stop;
/* Woken by the signal handler and the lease thread when stop is set. */
static struct waiter *waiter;

static void request_stop(void)
{
	stop = 1;
	if (waiter)
		waiter_wake(waiter);
}

/* The store lease: its name in the store, how long a dead holder blocks
 * others, and how often a live one renews (a third of it, so two renewals
 * may fail to reach the service, each after its own retries, before it
 * runs out). */
#define STORE_LOCK_NAME "locks/replicator"
#define STORE_LOCK_TTL_S 60
#define STORE_LOCK_RENEW_S 20

struct store_lease {
	struct ferry_blobs_lock *lock;
	const char *url;
	pthread_t thread;
	int thread_started;
	pthread_mutex_t mu;
	pthread_cond_t cond;
	int quit;
	int64_t renewed_ns; /* CLOCK_MONOTONIC of the last renewal; both threads */
};

/* A pass renews the lease first unless it was renewed this recently:
 * passes come as often as segments do, and each renewal is a request. */
#define STORE_LOCK_FRESH_NS (5LL * 1000000000LL)

/* Set once a renewal failed: nothing more may be applied. */
static volatile sig_atomic_t lease_lost;

static int lease_renew(struct store_lease *l)
{
	if (lease_lost)
		return -ENOLCK;
	int r = ferry_blobs_lock_renew(l->lock);
	if (r < 0) {
		lease_lost = 1;
		request_stop();
		log_error("lost the replicator lock on store %s: %s; stopping so that two "
			  "replicators never write one store",
			  l->url,
			  r == -EBUSY ? "another replicator took it over" : env_blobs_strerror(r));
		return -ENOLCK;
	}
	__atomic_store_n(&l->renewed_ns, ferry_mono_ns(), __ATOMIC_RELAXED);
	return 0;
}

/* Before a pass: a lease renewed in the last few seconds still has most
 * of its 60 s to run. */
static int lease_refresh(struct store_lease *l)
{
	if (lease_lost)
		return -ENOLCK;
	if (ferry_mono_ns() - __atomic_load_n(&l->renewed_ns, __ATOMIC_RELAXED) <
	    STORE_LOCK_FRESH_NS)
		return 0;
	return lease_renew(l);
}

static void *lease_thread(void *userdata)
{
	struct store_lease *l = userdata;
	pthread_mutex_lock(&l->mu);
	while (!l->quit) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += STORE_LOCK_RENEW_S;
		while (!l->quit && pthread_cond_timedwait(&l->cond, &l->mu, &ts) != ETIMEDOUT)
			;
		if (l->quit)
			break;
		/* Renewing takes seconds when the service is slow; the mutex
		 * only guards quit. */
		pthread_mutex_unlock(&l->mu);
		int r = lease_renew(l);
		pthread_mutex_lock(&l->mu);
		if (r < 0)
			break;
	}
	pthread_mutex_unlock(&l->mu);
	return NULL;
}

static int lease_take(struct ferry_store *store, struct store_lease *l)
{
	*l = (struct store_lease){ .url = ferry_store_url(store), .renewed_ns = ferry_mono_ns() };
	int r = ferry_blobs_lock_acquire(ferry_store_blobs(store), STORE_LOCK_NAME,
					 STORE_LOCK_TTL_S, &l->lock);
	if (r == -EBUSY) {
		log_error("another replicator holds store %s (its lease %s is live); it is "
			  "released when that replicator stops, or expires %d s after it died",
			  l->url, STORE_LOCK_NAME, STORE_LOCK_TTL_S);
		return r;
	}
	if (r < 0) {
		log_error("cannot take the replicator lock on store %s: %s", l->url,
			  env_blobs_strerror(r));
		return r;
	}
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&l->cond, &ca);
	pthread_condattr_destroy(&ca);
	pthread_mutex_init(&l->mu, NULL);
	r = pthread_create(&l->thread, NULL, lease_thread, l);
	if (r != 0) {
		l->lock = ferry_blobs_lock_release(l->lock);
		pthread_cond_destroy(&l->cond);
		pthread_mutex_destroy(&l->mu);
		log_error_errno(-r, "cannot start the lease renewal thread");
		return -r;
	}
	l->thread_started = 1;
	log_debug("holding the replicator lock on store %s", l->url);
	return 0;
}

static void lease_drop(struct store_lease *l)
{
	if (!l->lock)
		return;
	pthread_mutex_lock(&l->mu);
	l->quit = 1;
	pthread_cond_signal(&l->cond);
	pthread_mutex_unlock(&l->mu);
	pthread_join(l->thread, NULL);
	pthread_cond_destroy(&l->cond);
	pthread_mutex_destroy(&l->mu);
	/* Released even when lost: a release with a stale lease id is
	 * refused by the service and changes nothing. */
	l->lock = ferry_blobs_lock_release(l->lock);
}

/* The store URL a vault's catalog names, for messages when the vault will
 * not open (the URL never holds a secret). */
static void vault_store_url(const char *dir, char *buf, size_t size)
{
	buf[0] = 0;
	_cleanup_free_ char *db = NULL;
	if (asprintf(&db, "%s/catalog.db", dir) < 0)
		return;
	struct ferry_catalog *c;
	if (ferry_catalog_open(db, 1, &c) < 0)
		return;
	if (ferry_catalog_get_setting(c, "store_url", buf, size) < 0)
		buf[0] = 0;
	ferry_catalog_free(c);
}

static void on_signal(int sig)
{
	request_stop();
}

static void help(void)
{
	printf("Usage: ferry-replicator --vault DIR [--once] [--interval SECONDS]\n"
	       "                        [--poll-interval SECONDS] [--metrics-file FILE]\n"
	       "                        [--verbose]\n"
	       "\n"
	       "Applies change-log segments from each VM's cache to the vault, cuts\n"
	       "recovery points by policy, thins old points and collects garbage.\n"
	       "\n"
	       "  --vault DIR               the vault (made by 'ferry init')\n"
	       "  --once                    apply what is waiting now, then exit\n"
	       "  --interval SECONDS        longest wait between passes (default 10)\n"
	       "  --poll-interval SECONDS   how often a cache on object storage is listed\n"
	       "                            for new segments (default 1: one LIST per VM\n"
	       "                            a second)\n"
	       "  --no-gc                   skip garbage collection\n"
	       "  --insecure-http           allow caches and stores over plain http://\n"
	       "                            beyond this machine (FERRY_INSECURE_HTTP=1)\n"
	       "  --metrics-file FILE       write Prometheus metrics to FILE after every\n"
	       "                            pass (node-exporter's textfile format)\n"
	       "  -v, --verbose             log each segment\n"
	       "  -h, --help                show this help\n"
	       "      --version             show the version\n"
	       "\n"
	       "Between passes it waits for segments: a local cache is watched with\n"
	       "inotify and a segment is applied as soon as it arrives; a cache on object\n"
	       "storage is listed every --poll-interval; a pass runs at least every\n"
	       "--interval whatever happens.\n"
	       "\n"
	       "With a store on object storage it holds the store's lease locks/replicator\n"
	       "(renewed every 20 s, expiring 60 s after a crash): a second replicator on\n"
	       "the same store refuses to start, and one that loses the lease stops.\n"
	       "\n"
	       "A lost or damaged segment, or an agent whose state is behind, ends in a\n"
	       "resync: the VM's image fingerprints go into its cache and the agent ships\n"
	       "only what differs.\n"
	       "\n"
	       "Exit status: 0 when every segment seen was applied (or a resync started\n"
	       "in its place), 1 on an error.\n");
}

/* Garbage is collected when thinning removed points, and at least hourly
 * (and at start) so packs left by a crash do not linger. */
#define GC_EVERY_NS (3600LL * 1000000000LL)

/* Whether the replicator applies segments of a VM in this state. */
static int replicating(enum ferry_vm_state s)
{
	return s == FERRY_VM_INITIAL || s == FERRY_VM_PROTECTED || s == FERRY_VM_ERROR ||
	       s == FERRY_VM_RESYNC_REQUIRED || s == FERRY_VM_RESYNCING;
}

/* The VMs being replicated, and where their caches are, in a digest:
 * how the wait notices a VM enabled (or one failed over) meanwhile. */
static int replicated_vms(struct ferry_vault *v, struct ferry_vm **ret, size_t *ret_n,
			  struct ferry_id *ret_digest)
{
	struct ferry_vm *vms;
	size_t n;
	int r = maint_list_vms(v, &vms, &n);
	if (r < 0)
		return r;
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		if (replicating(vms[i].state))
			vms[k++] = vms[i];
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	if (!f) {
		free(vms);
		return -ENOMEM;
	}
	for (size_t i = 0; i < k; i++)
		fprintf(f, "%s\n%s\n", vms[i].name, vms[i].cache_url);
	if (fclose(f) != 0) {
		free(vms);
		return -ENOMEM;
	}
	ferry_sha256(text, len, ret_digest);
	if (ret) {
		*ret = vms;
		*ret_n = k;
	} else
		free(vms);
	return 0;
}

/* Tells the waiter which VMs' caches to watch or poll. Before each pass,
 * so that whatever arrives during the pass wakes the wait after it. */
static void track_vms(struct ferry_vault *v, struct ferry_id *ret_digest)
{
	struct ferry_vm *vms;
	size_t n;
	int r = replicated_vms(v, &vms, &n, ret_digest);
	if (r < 0) {
		log_debug("cannot list VMs to wait for: %s", strerror(-r));
		return;
	}
	r = waiter_track(waiter, vms, n);
	if (r < 0)
		log_warning_errno(r, "cannot wait for new segments; passes run every --interval");
	free(vms);
}

/* Waits for a segment, a stop, a change in the VMs replicated, or the
 * deadline. The VMs are looked at in the catalog once a second (a
 * local read): a VM enabled while the replicator waits gets its first
 * pass then, not at the deadline. */
#define VM_CHECK_NS 1000000000LL
static int wait_for_work(struct ferry_vault *v, const struct ferry_id *tracked, int64_t deadline)
{
	for (;;) {
		int64_t now = ferry_mono_ns();
		int r = waiter_wait(waiter, MIN(deadline, now + VM_CHECK_NS));
		if (r != WAITER_TIMEOUT || stop || ferry_mono_ns() >= deadline)
			return r;
		struct ferry_id d;
		if (replicated_vms(v, NULL, NULL, &d) >= 0 && !ferry_id_equal(&d, tracked)) {
			log_debug("the VMs to replicate changed; a pass looks at them");
			return WAITER_ARRIVED;
		}
	}
}

/* 1 when the pass was skipped because the vault was busy. */
static int run_pass(struct ferry_vault *v, int do_gc, int64_t *last_gc_ns, struct monitor *mon)
{
	/* Held during the pass only, so 'ferry failover' and 'ferry gc' get in
	 * between passes. */
	_cleanup_close_ int writer = -1;
	int r = maint_lock(ferry_vault_dir(v), "writer", &writer);
	if (r == -EBUSY) {
		log_debug("vault busy (ferry gc or failover at work); pass skipped");
		return 1;
	}
	if (r < 0)
		return log_error_errno(r, "cannot lock vault %s", ferry_vault_dir(v));

	struct ferry_vm *vms;
	size_t n;
	r = maint_list_vms(v, &vms, &n);
	if (r < 0)
		return log_error_errno(r, "cannot list VMs");
	int failed = 0;
	for (size_t i = 0; i < n && !stop; i++)
		if (replicating(vms[i].state) &&
		    replicate_vm_counted(v, &vms[i], &stop, monitor_vm_stats(mon, vms[i].name)) < 0)
			failed = 1;
	free(vms);
	/* Without the store lease, thinning and gc could delete what another
	 * replicator just wrote. */
	if (lease_lost)
		return -ENOLCK;
	/* Health and metrics after the segments, before thinning and gc: what
	 * the pass changed is judged at once. */
	if (!stop)
		(void)monitor_pass(mon, v, ferry_now_ns());

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
		log_internal(
			g.packs_deleted || g.packs_rewritten || g.orphan_packs ? LOG_INFO :
										 LOG_DEBUG,
			0,
			"gc: %llu pack(s) deleted, %llu rewritten, %llu orphan(s), %llu bytes freed",
			(unsigned long long)g.packs_deleted, (unsigned long long)g.packs_rewritten,
			(unsigned long long)g.orphan_packs, (unsigned long long)g.bytes_freed);
	}
	return failed ? -EIO : 0;
}

int main(int argc, char **argv)
{
	enum {
		OPT_VERSION = 0x100,
		OPT_NO_GC,
		OPT_POLL_INTERVAL,
		OPT_INSECURE_HTTP,
		OPT_METRICS_FILE,
	};
	/* Segments, their unpacked data and packs are buffers of several MiB,
	 * allocated on one thread and freed on another, once per segment. With
	 * an arena per thread the freed blocks scatter over several heaps and
	 * the RSS grew with the disk size (171 -> 220 MiB from 2 to 8 GiB);
	 * with one heap they are reused and it stays flat. Keeping them out of
	 * the heap instead (a low mmap threshold) is flat too, but pays page
	 * faults for every buffer: replicator 20 % slower. */
	mallopt(M_ARENA_MAX, 1);
	static const struct option opts[] = {
		{ "vault", required_argument, NULL, 'V' },
		{ "once", no_argument, NULL, 'o' },
		{ "interval", required_argument, NULL, 'i' },
		{ "poll-interval", required_argument, NULL, OPT_POLL_INTERVAL },
		{ "no-gc", no_argument, NULL, OPT_NO_GC },
		{ "insecure-http", no_argument, NULL, OPT_INSECURE_HTTP },
		{ "metrics-file", required_argument, NULL, OPT_METRICS_FILE },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, OPT_VERSION },
		{},
	};
	const char *vault_dir = NULL, *metrics_file = NULL;
	int once = 0, do_gc = 1;
	long interval = 10, poll_interval = 1;

	log_set_program("ferry-replicator");
	env_blobs_setup();
	if (env_faults_setup() < 0)
		return 2;
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
			uint64_t v;
			if (ferry_parse_u64(optarg, strlen(optarg), 86400, &v) < 0 || v < 1) {
				log_error("--interval wants seconds between 1 and 86400, not '%s'",
					  optarg);
				return 2;
			}
			interval = (long)v;
			break;
		}
		case OPT_POLL_INTERVAL: {
			uint64_t v;
			if (ferry_parse_u64(optarg, strlen(optarg), 3600, &v) < 0 || v < 1) {
				log_error("--poll-interval wants seconds between 1 and 3600, not "
					  "'%s'",
					  optarg);
				return 2;
			}
			poll_interval = (long)v;
			break;
		}
		case OPT_NO_GC:
			do_gc = 0;
			break;
		case OPT_INSECURE_HTTP:
			env_blobs_allow_insecure_http();
			break;
		case OPT_METRICS_FILE:
			metrics_file = optarg;
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
	int r = fostate_replicator_lock(vault_dir, &lock_fd);
	if (r == -EBUSY) {
		log_error("another replicator holds vault %s", vault_dir);
		return 1;
	}
	if (r < 0) {
		log_error_errno(r, "cannot lock vault %s", vault_dir);
		return 1;
	}
	struct ferry_vault *v;
	r = ferry_vault_open(vault_dir, 0, &v);
	if (r < 0) {
		char url[FERRY_URL_MAX];
		vault_store_url(vault_dir, url, sizeof(url));
		if (strstr(url, "://"))
			log_error("cannot open vault %s: store %s: %s", vault_dir, url,
				  env_blobs_strerror(r));
		else
			log_error_errno(r, "cannot open vault %s", vault_dir);
		return 1;
	}

	struct store_lease lease = { 0 };
	if (!ferry_blobs_local_dir(ferry_store_blobs(ferry_vault_store(v)))) {
		r = lease_take(ferry_vault_store(v), &lease);
		if (r < 0) {
			ferry_vault_free(v);
			return 1;
		}
	}

	if (!once) {
		r = waiter_new((int64_t)poll_interval * 1000000000, &waiter);
		if (r < 0) {
			log_error_errno(r, "cannot set up waiting for segments");
			lease_drop(&lease);
			ferry_vault_free(v);
			return 1;
		}
	}
	/* No SA_RESTART: a signal also interrupts what blocks. The handler
	 * wakes the waiter, so a signal that comes just before the wait is
	 * not slept through. */
	struct sigaction sa = { .sa_handler = on_signal };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);

	/* Health is judged and recorded after every pass, with or without a
	 * metrics file. */
	struct monitor *mon = NULL;
	r = monitor_new(metrics_file, &mon);
	if (r < 0) {
		log_error_errno(r, "cannot set up health and metrics");
		lease_drop(&lease);
		waiter = waiter_free(waiter);
		ferry_vault_free(v);
		return 1;
	}
	int64_t last_gc_ns = 0;
	struct ferry_id tracked = { 0 };
	for (;;) {
		if (waiter)
			track_vms(v, &tracked);
		r = lease.lock ? lease_refresh(&lease) : 0;
		if (r >= 0)
			r = run_pass(v, do_gc, &last_gc_ns, mon);
		if (once || stop || lease_lost)
			break;
		/* A pass skipped for a busy vault is retried soon: what
		 * arrived before it will wake nobody. */
		int64_t wait_ns = (r == 1 ? MIN(poll_interval, interval) : interval) * 1000000000LL;
		if (wait_for_work(v, &tracked, ferry_mono_ns() + wait_ns) < 0) {
			/* Not expected; never spin. */
			struct timespec ts = { 1, 0 };
			nanosleep(&ts, NULL);
		}
		if (stop)
			break;
	}
	lease_drop(&lease);
	/* The other threads are gone; with the signals held, no handler
	 * can be waking the waiter as it goes. */
	sigset_t ss;
	sigemptyset(&ss);
	sigaddset(&ss, SIGTERM);
	sigaddset(&ss, SIGINT);
	pthread_sigmask(SIG_BLOCK, &ss, NULL);
	waiter = waiter_free(waiter);
	monitor_free(mon);
	ferry_vault_free(v);
	return r < 0 || lease_lost ? 1 : 0;
}
