/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * ferry-agent: runs where a VM's disks are, finds what changed with the
 * `scan` tracker (agent-scan.h), the `qemu` tracker (agent-qemu.h) or the
 * `libvirt` tracker (agent-libvirt.h) and
 * puts change-log segments into the cache, one cycle every `interval`
 * seconds (or once). This file owns the policy: options,
 * credentials over the environment, signals, the progress display,
 * statistics and retries; agentconf.c reads the configuration file
 * (written by `ferry enable-replication`) and agent-scan.c does the work.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "agent-libvirt.h"
#include "agent-metrics.h"
#include "agent-qemu.h"
#include "agent-scan.h"
#include "agent-sync.h"
#include "agentconf.h"
#include "env.h"
#include "ferry/cache.h"
#include "ferry/log.h"
#include "ferry/util.h"
#include "freeze.h"
#include "groupcut.h"

#ifndef FERRY_VERSION
#define FERRY_VERSION "0.1.0"
#endif

/* The vault default (ferry init); a vault with another chunk size still
 * applies what this ships, only without storing the frames as they are. */
#define DEFAULT_CHUNK_SIZE 65536u

/* Errors in options or configuration are about the text, not the system:
 * no errno. */
#define config_error(...) (log_error(__VA_ARGS__), -EINVAL)

/* [credentials] of the configuration over what the environment gives. */
static int apply_credentials(const struct agentconf *c, uint64_t max_rate)
{
	if (!c->has_creds && !max_rate)
		return 0;
	struct ferry_blobs_options o;
	int r = env_blobs_options(&o);
	if (r < 0)
		return r;
	const char **fields[AGENTCONF_NCREDS] = {
		[AGENTCONF_AZURE_CONNECTION_STRING] = &o.azure_connection_string,
		[AGENTCONF_AZURE_ACCOUNT] = &o.azure_account,
		[AGENTCONF_AZURE_KEY] = &o.azure_key,
		[AGENTCONF_AZURE_SAS_TOKEN] = &o.azure_sas,
		[AGENTCONF_AWS_ACCESS_KEY_ID] = &o.aws_access_key_id,
		[AGENTCONF_AWS_SECRET_ACCESS_KEY] = &o.aws_secret_access_key,
		[AGENTCONF_AWS_SESSION_TOKEN] = &o.aws_session_token,
		[AGENTCONF_AWS_REGION] = &o.aws_region,
		[AGENTCONF_AWS_ENDPOINT_URL] = &o.aws_endpoint_url,
	};
	for (size_t i = 0; i < ARRAY_SIZE(fields); i++)
		if (c->creds[i])
			*fields[i] = c->creds[i];
	if (max_rate) {
		/* Uploads to an object-store cache go one at a time, so the cap
		 * per request is the agent's cap. */
		o.max_rate = max_rate;
		o.parallel = 1;
	}
	return ferry_blobs_set_options(&o);
}

/* ---- signals ---- */

static volatile sig_atomic_t stop_requested;
/* What the trackers watch: a stop request, or the lease lost to another
 * agent (that ends the cycle, not the agent). */
static volatile sig_atomic_t cycle_stop, lease_lost;
static int wake_pipe[2] = { -1, -1 };

static void on_signal(int sig)
{
	int saved = errno;
	stop_requested = 1;
	cycle_stop = 1;
	if (wake_pipe[1] >= 0)
		(void)!write(wake_pipe[1], "x", 1);
	errno = saved;
}

static int setup_signals(void)
{
	if (pipe2(wake_pipe, O_CLOEXEC | O_NONBLOCK) < 0)
		return -errno;
	/* A second ^C kills at once (the state survives any kill); no
	 * SA_RESTART, so the wait between cycles wakes up. */
	struct sigaction sa = { .sa_handler = on_signal, .sa_flags = SA_RESETHAND };
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGTERM, &sa, NULL) < 0 || sigaction(SIGINT, &sa, NULL) < 0)
		return -errno;
	return 0;
}

/* Waits until the monotonic deadline or a stop request. */
static void wait_until(int64_t deadline_ns)
{
	while (!stop_requested) {
		int64_t now = ferry_mono_ns();
		if (now >= deadline_ns)
			return;
		int64_t ms = (deadline_ns - now + 999999) / 1000000;
		struct pollfd pfd = { .fd = wake_pipe[0], .events = POLLIN };
		(void)poll(&pfd, 1, (int)MIN(ms, (int64_t)60000));
	}
}

/* When the next cycle starts: interval after this one's start, or at the
 * start of the group's next round if that comes first, so that every
 * member comes to the round at once. */
static int64_t next_cycle(int64_t start, uint64_t interval, const struct groupcut_params *g)
{
	int64_t next = start + (int64_t)interval * 1000000000;
	if (!g)
		return next;
	int64_t now = ferry_now_ns();
	int64_t round = groupcut_round_start_ns(g, groupcut_round(g, now) + 1);
	return MIN(next, ferry_mono_ns() + (round - now));
}

/* ---- progress display ---- */

struct display {
	const char *vm;
	int active;
	int64_t first_ns, last_ns;
	uint64_t first_done;
	int shown;
	/* Kept across cycles: whether stderr is a terminal, and where the
	 * progress of a cycle goes into the status (a handle of the scanning
	 * thread's own: the shipper uses the other one meanwhile). */
	int tty;
	struct ferry_cache *status_cache;
	struct ferry_agent_status *status;
	int64_t status_ns;
};

/* The status went out this long ago at most while a cycle reads whole
 * disks (docs/format/cache.md, 1.2): ferry status shows how far it is. */
#define PROGRESS_STATUS_NS (10LL * 1000000000LL)

static void progress_status(struct display *d, int64_t now, uint64_t done, uint64_t total,
			    double rate, double secs)
{
	if (!d->status_cache || !d->status || total == 0 ||
	    (d->status_ns && now - d->status_ns < PROGRESS_STATUS_NS))
		return;
	d->status_ns = now;
	struct ferry_agent_status *st = d->status;
	st->progress_total_bytes = total;
	st->progress_done_bytes = MIN(done, total);
	st->progress_rate = secs >= 1 && rate >= 1 ? (uint64_t)rate : 0;
	st->written_ns = ferry_now_ns();
	int r = ferry_cache_put_status(d->status_cache, d->vm, st);
	if (r < 0)
		log_debug_errno(r, "VM %s: cannot put the cycle's progress into the cache", d->vm);
}

static void show_progress(void *userdata, uint64_t done, uint64_t total)
{
	struct display *d = userdata;
	int64_t now = ferry_mono_ns();
	if (!d->active) {
		d->active = 1;
		d->first_ns = now;
		d->first_done = done;
		progress_status(d, now, done, total, 0, 0);
		return;
	}
	double secs = (double)(now - d->first_ns) / 1e9;
	double rate = secs > 0 ? (double)(done - d->first_done) / secs : 0;
	progress_status(d, now, done, total, rate, secs);
	if (!d->tty || (now - d->last_ns < 250000000 && done < total))
		return;
	d->last_ns = now;

	double pct = total ? 100.0 * (double)done / (double)total : 100.0;
	char eta[32] = "unknown";
	if (rate > 0) {
		uint64_t left = (uint64_t)((double)(total - done) / rate);
		snprintf(eta, sizeof(eta), "%" PRIu64 ":%02" PRIu64 ":%02" PRIu64, left / 3600,
			 left / 60 % 60, left % 60);
	}
	fprintf(stderr, "\rferry-agent: %s: %5.1f%%  %8.1f MB/s  ETA %s\033[K", d->vm, pct,
		rate / 1e6, eta);
	fflush(stderr);
	d->shown = 1;
}

static void clear_progress(struct display *d)
{
	if (d->shown) {
		fprintf(stderr, "\r\033[K");
		fflush(stderr);
	}
	*d = (struct display){
		.vm = d->vm, .tty = d->tty, .status_cache = d->status_cache, .status = d->status
	};
}

/* ---- statistics ---- */

static int write_stats(const char *state, const struct agent_scan_stats *st)
{
	_cleanup_free_ char *path = NULL, *text = NULL;
	if (asprintf(&path, "%s/stats", state) < 0)
		return -ENOMEM;
	int n = asprintf(&text,
			 "cycle=%" PRIu64 "\n"
			 "seq=%" PRIu64 "\n"
			 "scanned_bytes=%" PRIu64 "\n"
			 "shipped_bytes=%" PRIu64 "\n"
			 "segments=%" PRIu64 "\n"
			 "time=%" PRId64 "\n"
			 "zeroed_bytes=%" PRIu64 "\n"
			 "disk_bytes=%" PRIu64 "\n"
			 "resumed_from=%" PRIu64 "\n"
			 "cycle_shipped_bytes=%" PRIu64 "\n"
			 "cycle_segments=%" PRIu64 "\n"
			 "total_shipped_bytes=%" PRIu64 "\n"
			 "marker_time_ns=%" PRId64 "\n"
			 "duration_ms=%" PRId64 "\n",
			 st->cycle, st->seq, st->scanned_bytes, st->shipped_bytes, st->segments,
			 st->marker_time_ns / 1000000000, st->zeroed_bytes, st->disk_bytes,
			 st->resumed_from, st->cycle_shipped_bytes, st->cycle_segments,
			 st->total_shipped_bytes, st->marker_time_ns,
			 (st->finished_ns - st->started_ns) / 1000000);
	if (n < 0)
		return -ENOMEM;
	return ferry_write_file_atomic(path, text, (size_t)n);
}

static void log_summary(const char *vm, const struct agent_scan_stats *st)
{
	double secs = (double)(st->finished_ns - st->started_ns) / 1e9;
	log_info("VM %s: cycle %" PRIu64 " done: scanned %" PRIu64 " bytes, shipped %" PRIu64
		 " bytes in %" PRIu64 " segments (last seq %" PRIu64 "), %" PRIu64
		 " bytes shipped in total; %.1f s, %.1f MB/s",
		 vm, st->cycle, st->scanned_bytes, st->shipped_bytes, st->segments, st->seq,
		 st->total_shipped_bytes, secs,
		 secs > 0 ? (double)st->scanned_bytes / secs / 1e6 : 0);
}

/* ---- status in the cache ---- */

/*
 * Tells the target how this agent is doing (docs/format/cache.md): after a
 * complete cycle its figures, after a failed one the same figures with the
 * error, so that `ferry status` can tell a failing agent from a silent one.
 * Best effort: a status that cannot be put costs a warning, never a cycle.
 */
static void put_status(struct ferry_cache *cache, const char *vm, struct ferry_agent_status *last,
		       const struct agent_scan_stats *st, int qemu, int r)
{
	/* The app-consistent attempts carry over cycles that make none, and
	 * a cycle that ended has no progress to show. */
	const int app_error = last->app_error;
	const int64_t app_attempt_ns = last->app_attempt_ns, app_ok_ns = last->app_ok_ns;
	char app_message[sizeof(last->app_message)];
	snprintf(app_message, sizeof(app_message), "%s", last->app_message);
	if (r > 0) {
		*last = (struct ferry_agent_status){
			.tracker = last->tracker,
			.interval_s = last->interval_s,
			.cycle = st->cycle,
			.seq = st->seq,
			.marker_ns = st->marker_time_ns,
			.started_ns = st->started_ns,
			.duration_ns = MAX(st->finished_ns - st->started_ns, INT64_C(0)),
			.shipped_bytes = st->cycle_shipped_bytes,
			.segments = st->cycle_segments,
			.read_bytes = st->scanned_bytes,
			.source_waiting_bytes = qemu ? st->source_waiting_bytes :
						       FERRY_STATUS_UNKNOWN,
		};
	}
	last->error = r < 0 ? (-r <= 4095 ? -r : EIO) : 0;
	/* What the cycle said when it failed (a disk that changed size, a
	 * cache refusing us), so that the target sees more than an errno. */
	if (r < 0)
		log_last_error(last->message, sizeof(last->message));
	else
		last->message[0] = 0;
	if (st->app_attempt_ns > 0 && st->app_attempt_ns >= app_attempt_ns) {
		/* An errno, or EIO for anything else a tracker might say. */
		int e = st->app_error;
		last->app_error = e > 0 && e <= 4095 ? e : e ? EIO : 0;
		last->app_attempt_ns = st->app_attempt_ns;
		snprintf(last->app_message, sizeof(last->app_message), "%s",
			 last->app_error ? st->app_message : "");
	} else {
		last->app_error = app_error;
		last->app_attempt_ns = app_attempt_ns;
		snprintf(last->app_message, sizeof(last->app_message), "%s", app_message);
	}
	last->app_ok_ns = MAX(app_ok_ns, st->app_ok_ns);
	last->progress_done_bytes = last->progress_total_bytes = last->progress_rate = 0;
	last->written_ns = ferry_now_ns();
	int k = ferry_cache_put_status(cache, vm, last);
	if (k < 0)
		log_warning_errno(k, "VM %s: cannot put the agent's status into cache %s", vm,
				  ferry_cache_url(cache));
}

/* Errors worth another try at the next interval rather than an exit. */
static int transient(int r)
{
	/* The metrics' transient errors, and a lease held by another. */
	return r == -EBUSY || agent_error_kind(r) == AGENT_ERROR_TRANSIENT;
}

/* ---- app-consistent cuts: when one is due ---- */

/* One every interval_s, the first at the first cycle. After a failed
 * attempt one retry at the next cycle, then the interval again: a VM
 * whose guest agent does not answer must not pay a freeze's timeout every
 * cycle. */
struct app_sched {
	uint64_t interval_s;  /* 0: off */
	int64_t last_ns;      /* monotonic start of the cycle of the last attempt */
	int64_t last_attempt; /* the tracker's app_attempt_ns after it */
	unsigned failures;    /* consecutive failed attempts */
};

static int app_due(const struct app_sched *a, int64_t now)
{
	if (!a->interval_s)
		return 0;
	if (!a->last_ns || a->failures == 1)
		return 1;
	return now - a->last_ns >= (int64_t)a->interval_s * 1000000000;
}

static void app_after(struct app_sched *a, const struct agent_scan_stats *st, int64_t start)
{
	if (!st->app_attempt_ns || st->app_attempt_ns == a->last_attempt)
		return; /* no attempt in this cycle */
	a->last_attempt = st->app_attempt_ns;
	a->last_ns = start;
	a->failures = st->app_error ? a->failures + 1 : 0;
}

/* ---- main ---- */

static void help(void)
{
	printf("Usage: ferry-agent --config FILE [OPTIONS]\n"
	       "\n"
	       "Track the disks of a VM and ship their changes into the cache, one\n"
	       "cycle every interval: the scan tracker reads the disk files, the qemu\n"
	       "tracker a running qemu's dirty bitmaps, the libvirt tracker a libvirt\n"
	       "domain's checkpoints and backups (the configuration says which).\n"
	       "\n"
	       "  -c, --config FILE        agent configuration (ferry enable-replication)\n"
	       "  -1, --once               run one cycle and exit\n"
	       "  -i, --interval SECONDS   seconds between cycle starts (overrides the file)\n"
	       "  -r, --max-rate RATE      cap uploads to an object-store cache, bytes/s\n"
	       "                           (suffix k, M or G: 500k, 20M)\n"
	       "  -k, --insecure-http      allow a cache over plain http:// beyond this\n"
	       "                           machine (also FERRY_INSECURE_HTTP=1)\n"
	       "  -L, --lease SECONDS      how long the VM's agent lease outlives this agent\n"
	       "                           (default: 5 intervals, at least 30 s)\n"
	       "      --metrics-file FILE  write Prometheus metrics to FILE after every\n"
	       "                           cycle (node-exporter's textfile format)\n"
	       "  -v, --verbose            log debug messages\n"
	       "  -h, --help               show this help\n"
	       "  -V, --version            show the version\n"
	       "\n"
	       "See ferry-agent(8).\n");
}

static int lock_state(const char *state, int *ret_fd)
{
	_cleanup_free_ char *path = NULL;
	if (asprintf(&path, "%s/lock", state) < 0)
		return -ENOMEM;
	_cleanup_close_ int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, FERRY_FILE_MODE);
	if (fd < 0)
		return log_error_errno(-errno, "cannot open %s", path);
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		if (errno == EWOULDBLOCK)
			return log_error_errno(-EBUSY, "another ferry-agent is using %s", state);
		return log_error_errno(-errno, "cannot lock %s", path);
	}
	*ret_fd = TAKE_FD(fd);
	return 0;
}

DEFINE_TRIVIAL_CLEANUP_FUNC(struct agent_qemu *, agent_qemu_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct agent_libvirt *, agent_libvirt_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct agent_sync *, agent_sync_free);

/* ---- the lease, renewed while the agent runs ---- */

/* The lease outlives its last renewal by this much unless --lease says:
 * a few cycles, so that an agent between two cycles keeps its VM. */
#define LEASE_MIN_S 30u
#define LEASE_CYCLES 5u
#define LEASE_MAX_S (7u * 24 * 3600)

/* A thread renews the lease every third of its time, during long cycles
 * as between them, with a cache handle of its own. It ends when another
 * agent took the lease: the cycle stops, and the next one is refused. */
struct renewer {
	struct agent_sync *sync;
	const char *url, *vm;
	unsigned every_s;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int started, ended, quit;
};

static void renewer_lost(struct renewer *rn)
{
	log_error("VM %s: another agent took over its lease; this agent stops shipping", rn->vm);
	lease_lost = 1;
	cycle_stop = 1;
	if (wake_pipe[1] >= 0)
		(void)!write(wake_pipe[1], "x", 1);
}

static void *renew_main(void *arg)
{
	struct renewer *rn = arg;
	struct ferry_cache *c = NULL;
	int r = ferry_cache_open(rn->url, 0, &c);
	if (r < 0)
		log_warning_errno(r,
				  "VM %s: cannot open the cache to renew the agent lease; it is "
				  "renewed once a cycle only",
				  rn->vm);
	pthread_mutex_lock(&rn->lock);
	while (c && !rn->quit) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += rn->every_s;
		while (!rn->quit && pthread_cond_timedwait(&rn->cond, &rn->lock, &ts) == 0)
			;
		if (rn->quit)
			break;
		pthread_mutex_unlock(&rn->lock);
		r = agent_sync_renew(rn->sync, c);
		if (r < 0 && r != -ENOLCK)
			log_warning_errno(r, "VM %s: cannot renew the agent lease", rn->vm);
		if (r == -ENOLCK)
			renewer_lost(rn);
		pthread_mutex_lock(&rn->lock);
		if (r == -ENOLCK)
			break;
	}
	rn->ended = 1;
	pthread_mutex_unlock(&rn->lock);
	ferry_cache_free(c);
	return NULL;
}

static void renewer_stop(struct renewer *rn)
{
	if (!rn->started)
		return;
	pthread_mutex_lock(&rn->lock);
	rn->quit = 1;
	pthread_cond_broadcast(&rn->cond);
	pthread_mutex_unlock(&rn->lock);
	pthread_join(rn->thread, NULL);
	rn->started = rn->ended = rn->quit = 0;
}

/* Runs the renewer once the lease is ours (again). */
static void renewer_ensure(struct renewer *rn)
{
	pthread_mutex_lock(&rn->lock);
	int ended = rn->ended;
	pthread_mutex_unlock(&rn->lock);
	if (rn->started && ended)
		renewer_stop(rn);
	if (rn->started)
		return;
	int r = -pthread_create(&rn->thread, NULL, renew_main, rn);
	if (r < 0)
		log_warning_errno(r,
				  "VM %s: cannot start the lease renewal; it is renewed once a "
				  "cycle only",
				  rn->vm);
	rn->started = r >= 0;
}

static int renewer_init(struct renewer *rn)
{
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	int r = -pthread_cond_init(&rn->cond, &ca);
	pthread_condattr_destroy(&ca);
	if (r >= 0)
		r = -pthread_mutex_init(&rn->lock, NULL);
	return r;
}

/*
 * Before a cycle: the lease and the state's place in the chain
 * (agent-sync.h). 0 or 1 to run the cycle; otherwise the cycle does not
 * run. A refusal is logged once while it lasts, and writes nothing to the
 * cache (the status there is the other agent's).
 */
static int begin_cycle(struct agent_sync *sync, struct renewer *rn, struct agent_qemu *aq,
		       struct agent_libvirt *al, int *refused)
{
	struct agent_sync_base base;
	char why[1024];
	int r = agent_sync_begin(sync, &base, why, sizeof(why));
	if (r == -EBUSY) {
		log_internal(*refused ? LOG_DEBUG : LOG_ERR, 0, "%s", why);
		*refused = 1;
		return r;
	}
	*refused = 0;
	if (r == -ESTALE)
		log_error("%s", why);
	if (r >= 0 || r == -ESTALE) {
		lease_lost = 0;
		cycle_stop = stop_requested;
		renewer_ensure(rn);
	}
	if (r >= 0 && aq && base.epoch)
		agent_qemu_resync(aq, base.base_seq, &base.base_digest, r == 1);
	if (r >= 0 && al && base.epoch)
		agent_libvirt_resync(al, base.base_seq, &base.base_digest, r == 1);
	return r;
}

static int run(int argc, char **argv)
{
	static const struct option options[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "once", no_argument, NULL, '1' },
		{ "interval", required_argument, NULL, 'i' },
		{ "max-rate", required_argument, NULL, 'r' },
		{ "insecure-http", no_argument, NULL, 'k' },
		{ "lease", required_argument, NULL, 'L' },
		{ "metrics-file", required_argument, NULL, 'M' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ 0 },
	};
	const char *config_file = NULL, *metrics_file = NULL;
	int once = 0, verbose = 0;
	int64_t interval_arg = -1;
	int c;
	uint64_t max_rate = 0, lease_arg = 0;
	while ((c = getopt_long(argc, argv, "c:1i:r:kL:vhV", options, NULL)) >= 0) {
		switch (c) {
		case 'L':
			if (ferry_parse_u64(optarg, strlen(optarg), LEASE_MAX_S, &lease_arg) < 0 ||
			    lease_arg == 0)
				return config_error("invalid --lease '%s' (seconds, 1 to %u)",
						    optarg, LEASE_MAX_S);
			break;
		case 'r': {
			/* Bytes per second, with an optional k, M or G (powers of 1024). */
			size_t n = strspn(optarg, "0123456789");
			const char *end = optarg + n;
			unsigned shift = *end == 'k' ? 10 : *end == 'M' ? 20 : *end == 'G' ? 30 : 0;
			uint64_t v;
			if (shift)
				end++;
			if (*end || ferry_parse_u64(optarg, n, UINT64_MAX >> 30, &v) < 0 || v == 0)
				return config_error("invalid --max-rate '%s' (bytes per second, "
						    "e.g. 500k, 20M)",
						    optarg);
			max_rate = (uint64_t)v << shift;
			break;
		}
		case 'c':
			config_file = optarg;
			break;
		case 'M':
			metrics_file = optarg;
			break;
		case '1':
			once = 1;
			break;
		case 'i': {
			uint64_t v;
			if (agentconf_parse_interval(optarg, &v) < 0)
				return config_error("invalid --interval '%s' (seconds, 0 to %u)",
						    optarg, AGENTCONF_MAX_INTERVAL);
			interval_arg = (int64_t)v;
			break;
		}
		case 'k':
			env_blobs_allow_insecure_http();
			break;
		case 'v':
			verbose = 1;
			break;
		case 'h':
			help();
			return 0;
		case 'V':
			printf("ferry-agent %s\n", FERRY_VERSION);
			return 0;
		default:
			fprintf(stderr, "Try 'ferry-agent --help'.\n");
			return -EINVAL;
		}
	}
	if (optind < argc)
		return config_error("unexpected argument '%s'", argv[optind]);
	if (!config_file)
		return config_error("--config FILE is required (see ferry-agent --help)");
	if (verbose)
		log_set_max_level(LOG_DEBUG);

	_cleanup_(agentconf_free) struct agentconf cfg = { 0 };
	int r = agentconf_load(config_file, &cfg);
	if (r < 0)
		return r;
	r = apply_credentials(&cfg, max_rate);
	if (r < 0)
		return log_error_errno(r, "cannot apply the credentials and --max-rate");
	uint64_t interval = interval_arg >= 0 ? (uint64_t)interval_arg : cfg.interval;

	r = ferry_mkdir_p(cfg.state, 0700);
	if (r < 0)
		return log_error_errno(r, "VM %s: cannot create state directory %s", cfg.vm,
				       cfg.state);
	_cleanup_close_ int lock_fd = -1;
	r = lock_state(cfg.state, &lock_fd);
	if (r < 0)
		return r;

	_cleanup_(ferry_cache_freep) struct ferry_cache *cache = NULL;
	r = ferry_cache_open(cfg.cache, 1, &cache);
	if (r < 0)
		return log_error_errno(r, "VM %s: cannot open cache %s", cfg.vm, cfg.cache);

	r = setup_signals();
	if (r < 0)
		return log_error_errno(r, "cannot set up signal handling");

	/* The progress of a cycle goes into the status through a handle of
	 * its own; without one, it is only shown on a terminal. */
	_cleanup_(ferry_cache_freep) struct ferry_cache *status_cache = NULL;
	if (ferry_cache_open(cfg.cache, 0, &status_cache) < 0)
		status_cache = NULL;
	struct display disp = { .vm = cfg.vm,
				.tty = isatty(STDERR_FILENO),
				.status_cache = status_cache };
	struct agent_scan_params p = {
		.vm = cfg.vm,
		.state_dir = cfg.state,
		.disks = cfg.disks,
		.ndisks = cfg.ndisks,
		.cache = cache,
		.stop = &cycle_stop,
		.progress = show_progress,
		.userdata = &disp,
		/* Compression is most of the agent's CPU: use every core, up to 4. */
		.compress_workers = (unsigned)MIN(MAX(sysconf(_SC_NPROCESSORS_ONLN), 1L), 4L),
		.chunk_size = cfg.has_chunk_size ? cfg.chunk_size : DEFAULT_CHUNK_SIZE,
	};
	/* What the trackers that read views over NBD ship with. */
	const struct viewship_params ship = {
		.vm = cfg.vm,
		.state_dir = cfg.state,
		.disks = cfg.disks,
		.ndisks = cfg.ndisks,
		.cache = cache,
		.stop = &cycle_stop,
		.chunk_size = p.chunk_size,
		.compress_workers = p.compress_workers,
	};
	struct agent_qemu_params qp = {
		.ship = ship,
		.qmp_path = cfg.qmp,
		.nbd_socket = cfg.nbd_socket,
		.qga_path = cfg.qga,
		.freeze_limit_ms = (int)(cfg.freeze_timeout * 1000),
	};
	const struct groupcut_params gp = {
		.group = cfg.group,
		.vm = cfg.vm,
		.cache = cache,
		.interval_s = cfg.group_interval,
		.pause_limit_ms = (int)cfg.group_pause_limit_ms,
		/* Members whose cycles are long may come late to the round. */
		.prepare_timeout_ms = 10000,
		.stop = &cycle_stop,
	};
	if (cfg.group) {
		qp.group = &gp;
		r = groupcut_join(&gp);
		if (r < 0)
			return r;
	}
	_cleanup_(agent_qemu_freep) struct agent_qemu *aq = NULL;
	if (cfg.tracker == AGENTCONF_TRACKER_QEMU) {
		r = agent_qemu_new(&qp, &aq);
		if (r < 0)
			return r;
	}
	const struct agent_libvirt_params lp = {
		.ship = ship,
		.uri = cfg.connect,
		.domain = cfg.domain,
		.run_dir = cfg.run_dir,
		.freezes = cfg.app_interval > 0,
	};
	_cleanup_(agent_libvirt_freep) struct agent_libvirt *al = NULL;
	if (cfg.tracker == AGENTCONF_TRACKER_LIBVIRT) {
		r = agent_libvirt_new(&lp, &al);
		if (r < 0)
			return r;
	}
	/* The trackers that read views over NBD keep no progress file. */
	const enum ferry_tracker tracker = aq ? FERRY_TRACKER_QEMU :
					   al ? FERRY_TRACKER_LIBVIRT :
						FERRY_TRACKER_SCAN;
	/* A guest left frozen by an agent killed in a freeze (its freezer
	 * thaws within the limit, unless it was killed too). */
	if (aq && cfg.qga) {
		char why[256];
		int k = freeze_recover(cfg.qga, FREEZE_CONNECT_MS, why, sizeof(why));
		if (k > 0)
			log_warning("VM %s: its guest was frozen (an agent killed in a freeze?); "
				    "thawed it",
				    cfg.vm);
		else if (k < 0)
			log_warning("VM %s: cannot check whether its guest is frozen: %s", cfg.vm,
				    why);
	}
	struct app_sched app = { .interval_s = (aq && cfg.qga) || al ? cfg.app_interval : 0 };
	log_debug("VM %s: %zu disks, %s tracker, cache %s, state %s, interval %" PRIu64 " s",
		  cfg.vm, cfg.ndisks,
		  aq ? "qemu" :
		  al ? "libvirt" :
		       "scan",
		  ferry_cache_url(cache), cfg.state, interval);

	char host[256] = "";
	(void)gethostname(host, sizeof(host) - 1);
	const struct agent_sync_params sp = {
		.vm = cfg.vm,
		.state_dir = cfg.state,
		.cache = cache,
		.tracker = tracker,
		.scan = aq || al ? NULL : &p,
		.disks = cfg.disks,
		.ndisks = cfg.ndisks,
		.lease_s =
			(unsigned)(lease_arg ?:
					   MIN(MAX((uint64_t)LEASE_MIN_S, LEASE_CYCLES * interval),
					       (uint64_t)LEASE_MAX_S)),
		.host = host,
		.pid = (uint32_t)getpid(),
	};
	_cleanup_(agent_sync_freep) struct agent_sync *sync = NULL;
	r = agent_sync_new(&sp, &sync);
	if (r < 0)
		return r;
	struct renewer rn = {
		.sync = sync, .url = cfg.cache, .vm = cfg.vm, .every_s = MAX(sp.lease_s / 3, 1u)
	};
	r = renewer_init(&rn);
	if (r < 0)
		return log_error_errno(r, "cannot set up the lease renewal");
	int refused = 0;

	struct ferry_agent_status status = {
		.tracker = tracker,
		.interval_s = (uint32_t)MIN(interval, (uint64_t)UINT32_MAX),
		/* Until a cycle tells: put before the first one completes. */
		.source_waiting_bytes = FERRY_STATUS_UNKNOWN,
	};
	disp.status = &status;
	struct agent_counters counters = { 0 };
	for (;;) {
		int64_t start = ferry_mono_ns();
		struct agent_scan_stats st = { 0 };
		log_clear_last_error();
		r = begin_cycle(sync, &rn, aq, al, &refused);
		if (r == -EBUSY) {
			/* Another agent's VM: wait for its lease to run out. */
			if (once)
				break;
			goto next;
		}
		if (r >= 0 && aq && app_due(&app, start))
			agent_qemu_want_app(aq);
		if (r >= 0 && al && app_due(&app, start))
			agent_libvirt_want_app(al);
		int ran = r >= 0;
		if (r >= 0)
			r = aq ? agent_qemu_cycle(aq, &st) :
			    al ? agent_libvirt_cycle(al, &st) :
				 agent_scan_cycle(&p, &st);
		if (ran && (aq || al))
			app_after(&app, &st, start);
		clear_progress(&disp);
		if (r <= 0 && lease_lost && !stop_requested)
			r = -ENOLCK; /* stopped by the lease, not by the user */
		if (r > 0) {
			int k = agent_sync_end(sync, st.seq);
			if (k < 0)
				log_warning_errno(k,
						  "VM %s: the state identity or lease could not "
						  "record cycle %" PRIu64,
						  cfg.vm, st.cycle);
		}
		/* Not once the lease is another agent's: so is the status. */
		if (r != 0 && r != -ENOLCK)
			put_status(cache, cfg.vm, &status, &st, aq || al, r);
		agent_counters_add(&counters, r, &st);
		if (metrics_file) {
			int k = agent_metrics_write(metrics_file, cfg.vm, &counters,
						    status.written_ns ? &status : NULL);
			if (k < 0)
				log_warning_errno(k, "VM %s: cannot write the metrics file %s",
						  cfg.vm, metrics_file);
		}
		if (r < 0) {
			/* A qemu restarting, a monitor or cache away for a while: the
			 * qemu tracker's bitmaps keep what it could not ship, so only
			 * an error in the configuration ends it. Waiting for a resync
			 * or for a lease, it asks again next time. */
			if (once || !(transient(r) || r == -ESTALE || r == -ENOLCK ||
				      ((aq || al) && r != -EINVAL && r != -ENOMEM)))
				break;
			log_warning("VM %s: cycle failed; retrying in %" PRIu64 " s", cfg.vm,
				    interval);
		} else if (r == 0) {
			log_info("VM %s: stopped during cycle %" PRIu64 " after shipping %" PRIu64
				 " bytes; the next run resumes it",
				 cfg.vm, st.cycle, st.shipped_bytes);
			break;
		} else {
			log_summary(cfg.vm, &st);
			int k = write_stats(cfg.state, &st);
			if (k < 0)
				log_warning_errno(k, "VM %s: cannot write %s/stats", cfg.vm,
						  cfg.state);
			if (once)
				break;
		}
next:
		if (!stop_requested)
			wait_until(next_cycle(start, interval, qp.group));
		if (stop_requested) {
			r = 0;
			break;
		}
	}
	renewer_stop(&rn);
	return r < 0 ? r : 0;
}

int main(int argc, char **argv)
{
	log_set_program("ferry-agent");
	/* Segment buffers are 16 MiB, allocated and freed once per segment:
	 * keep them out of the heap, or glibc raises its mmap threshold and the
	 * heap fragments, so the agent's RSS grows with the disk size. */
	mallopt(M_MMAP_THRESHOLD, 1 << 20);
	env_blobs_setup();
	if (env_faults_setup() < 0)
		return 2;
	return run(argc, argv) < 0 ? 1 : 0;
}
