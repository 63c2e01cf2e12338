/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The health rules (replicator/lib/health.h) on made-up VMs: healthy; lag
 * over the RPO target a warning and over twice it critical, on either
 * side of each threshold; an agent silent, failing, or unreadable; the
 * VM's error and resync states; an unreachable cache (critical, and the
 * agent no longer judged); app-consistent points failing or overdue;
 * several reasons at once; figures from the source that are nonsense
 * (times far in the future or past) judged without overflow; messages
 * with control characters escaped; the default RPO target and its
 * parser; the state names both ways.
 */
#include "health.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "ferry/util.h"
#include "tap.h"

#define S 1000000000LL
#define NOW (INT64_C(1800000000) * S)

static struct ferry_vm vm_protected(void)
{
	struct ferry_vm vm = {
		.state = FERRY_VM_PROTECTED,
		.crash_interval_s = 300,
		.created_ns = NOW - 86400 * S,
		.marker_ns = NOW - 10 * S,
	};
	snprintf(vm.name, sizeof(vm.name), "web-1");
	snprintf(vm.cache_url, sizeof(vm.cache_url), "/srv/cache");
	return vm;
}

static struct ferry_agent_status agent_fine(void)
{
	return (struct ferry_agent_status){
		.tracker = FERRY_TRACKER_SCAN,
		.interval_s = 60,
		.written_ns = NOW - 5 * S,
		.cycle = 7,
		.seq = 9,
		.marker_ns = NOW - 10 * S,
		.started_ns = NOW - 11 * S,
		.duration_ns = 1 * S,
		.source_waiting_bytes = FERRY_STATUS_UNKNOWN,
	};
}

static struct health_report judge(const struct ferry_vm *vm, int cache, int agent,
				  const struct ferry_agent_status *st, int64_t target,
				  int64_t last_app)
{
	struct health_input in = {
		.vm = vm,
		.now_ns = NOW,
		.rpo_target_s = target,
		.cache = cache,
		.agent = agent,
		.status = st,
		.last_app_ns = last_app,
	};
	struct health_report h;
	health_evaluate(&in, &h);
	return h;
}

static int has(const struct health_report *h, enum health_kind k, enum health_state level,
	       const char *text)
{
	for (size_t i = 0; i < h->n; i++)
		if (h->reasons[i].kind == k && h->reasons[i].level == level &&
		    (!text || strstr(h->reasons[i].text, text)))
			return 1;
	return 0;
}

static void test_lag(void)
{
	struct ferry_vm vm = vm_protected();
	struct ferry_agent_status st = agent_fine();
	struct health_report h = judge(&vm, 0, 1, &st, 60, 0);
	ok(h.state == HEALTH_HEALTHY && h.n == 0, "a VM 10 s behind a 60 s target is healthy");
	ok(h.lag_ns == 10 * S && h.rpo_target_s == 60, "lag and target reported");

	vm.marker_ns = NOW - 60 * S;
	h = judge(&vm, 0, 1, &st, 60, 0);
	ok(h.state == HEALTH_HEALTHY, "lag at the target is still healthy");
	vm.marker_ns = NOW - 61 * S;
	h = judge(&vm, 0, 1, &st, 60, 0);
	ok(h.state == HEALTH_WARNING && has(&h, HEALTH_KIND_LAG, HEALTH_WARNING, "lag 61s"),
	   "lag over the target is a warning: %s", h.n ? h.reasons[0].text : "");
	vm.marker_ns = NOW - 120 * S;
	h = judge(&vm, 0, 1, &st, 60, 0);
	ok(h.state == HEALTH_WARNING, "lag at twice the target is a warning");
	vm.marker_ns = NOW - 121 * S;
	h = judge(&vm, 0, 1, &st, 60, 0);
	ok(h.state == HEALTH_CRITICAL && has(&h, HEALTH_KIND_LAG, HEALTH_CRITICAL, "twice"),
	   "lag over twice the target is critical: %s", h.n ? h.reasons[0].text : "");

	/* A marker from the future (a source clock ahead) is no lag. */
	vm.marker_ns = NOW + 3600 * S;
	h = judge(&vm, 0, 1, &st, 60, 0);
	ok(h.state == HEALTH_HEALTHY && h.lag_ns == 0, "a marker in the future counts as lag 0");
	vm.marker_ns = 1;
	h = judge(&vm, 0, 1, &st, HEALTH_RPO_TARGET_MAX, 0);
	ok(h.state == HEALTH_CRITICAL, "a marker at the epoch: critical, no overflow");
}

static void test_states(void)
{
	struct ferry_vm vm = vm_protected();
	struct ferry_agent_status st = agent_fine();
	vm.state = FERRY_VM_ERROR;
	snprintf(vm.error, sizeof(vm.error), "segment 7 refused: from a newer agent\x1b[31m");
	struct health_report h = judge(&vm, 0, 1, &st, 60, 0);
	ok(h.state == HEALTH_CRITICAL &&
		   has(&h, HEALTH_KIND_VM_ERROR, HEALTH_CRITICAL, "segment 7 refused"),
	   "error state is critical, with the vault's error");
	ok(!strchr(h.reasons[0].text, '\x1b') && strstr(h.reasons[0].text, "\\x1b[31m"),
	   "control characters escaped: %s", h.reasons[0].text);

	vm = vm_protected();
	vm.state = FERRY_VM_RESYNC_REQUIRED;
	struct health_input in = { .vm = &vm,
				   .now_ns = NOW,
				   .rpo_target_s = 600,
				   .agent = 1,
				   .status = &st,
				   .resync_reason =
					   "segment 0000000000000009.seg refused: damaged" };
	health_evaluate(&in, &h);
	ok(h.state == HEALTH_WARNING &&
		   has(&h, HEALTH_KIND_RESYNC, HEALTH_WARNING, "resync required: segment 00"),
	   "resync required is a warning with its reason: %s", h.reasons[0].text);
	vm.state = FERRY_VM_RESYNCING;
	health_evaluate(&in, &h);
	ok(has(&h, HEALTH_KIND_RESYNC, HEALTH_WARNING, "resyncing"), "resyncing is a warning");

	vm = vm_protected();
	vm.state = FERRY_VM_INITIAL;
	vm.marker_ns = 0;
	vm.initial_done_bytes = 1;
	vm.initial_total_bytes = 4;
	h = judge(&vm, 0, 0, NULL, 60, 0);
	ok(h.state == HEALTH_WARNING && h.lag_ns == -1 &&
		   has(&h, HEALTH_KIND_INITIAL, HEALTH_WARNING, "25.0% applied"),
	   "initial replication is a warning, with its progress: %s", h.reasons[0].text);

	vm = vm_protected();
	vm.state = FERRY_VM_FAILED_OVER;
	vm.marker_ns = NOW - 86400 * S;
	h = judge(&vm, -EIO, 0, NULL, 60, 0);
	ok(h.state == HEALTH_WARNING && h.n == 1 &&
		   has(&h, HEALTH_KIND_STATE, HEALTH_WARNING, "failed-over"),
	   "failed over: a warning, and neither lag nor cache judged");
}

static void test_cache_and_agent(void)
{
	struct ferry_vm vm = vm_protected();
	struct ferry_agent_status st = agent_fine();
	struct health_report h = judge(&vm, -ECONNREFUSED, 1, &st, 60, 0);
	ok(h.state == HEALTH_CRITICAL &&
		   has(&h, HEALTH_KIND_CACHE, HEALTH_CRITICAL, "cache /srv/cache unreachable"),
	   "an unreachable cache is critical: %s", h.reasons[0].text);

	st.written_ns = NOW - 600 * S; /* 3 x (60 + 1) = 183 s */
	h = judge(&vm, 0, 1, &st, 3600, 0);
	ok(h.state == HEALTH_WARNING &&
		   has(&h, HEALTH_KIND_AGENT_SILENT, HEALTH_WARNING, "agent silent since"),
	   "a silent agent is a warning: %s", h.n ? h.reasons[0].text : "");
	h = judge(&vm, -ETIMEDOUT, 1, &st, 3600, 0);
	ok(!has(&h, HEALTH_KIND_AGENT_SILENT, HEALTH_WARNING, NULL),
	   "behind an unreachable cache the agent is not judged");
	st.written_ns = NOW - 183 * S;
	ok(!health_agent_silent(&st, NOW), "not silent at three cycles");
	st.written_ns = NOW - 184 * S;
	ok(health_agent_silent(&st, NOW), "silent past three cycles");
	st.interval_s = 0;
	st.duration_ns = 0;
	st.written_ns = NOW - 30 * S;
	ok(!health_agent_silent(&st, NOW), "never silent within 30 s");
	st.written_ns = INT64_MIN;
	ok(health_agent_silent(&st, NOW), "a status from the dawn of time: silent, no overflow");
	st.interval_s = UINT32_MAX;
	st.duration_ns = INT64_MAX;
	st.written_ns = NOW - 86400 * S;
	ok(!health_agent_silent(&st, NOW), "huge figures from the source: no overflow");

	st = agent_fine();
	st.error = EINVAL;
	snprintf(st.message, sizeof(st.message), "disk vda changed size");
	h = judge(&vm, 0, 1, &st, 60, 0);
	ok(h.state == HEALTH_WARNING &&
		   has(&h, HEALTH_KIND_AGENT_ERROR, HEALTH_WARNING, "disk vda changed size"),
	   "a failed cycle is a warning, with the agent's message");
	st.message[0] = 0;
	h = judge(&vm, 0, 1, &st, 60, 0);
	ok(has(&h, HEALTH_KIND_AGENT_ERROR, HEALTH_WARNING, strerror(EINVAL)),
	   "without a message, its errno");
	h = judge(&vm, 0, -EBADMSG, NULL, 60, 0);
	ok(h.state == HEALTH_WARNING && has(&h, HEALTH_KIND_AGENT_STATUS, HEALTH_WARNING, NULL),
	   "an unreadable status is a warning");
	h = judge(&vm, 0, 0, NULL, 60, 0);
	ok(h.state == HEALTH_HEALTHY, "no status at all (an older agent) is no reason");
}

static void test_app(void)
{
	struct ferry_vm vm = vm_protected();
	struct ferry_agent_status st = agent_fine();
	st.app_error = ETIMEDOUT;
	st.app_attempt_ns = NOW - 90 * S;
	snprintf(st.app_message, sizeof(st.app_message), "guest-fsfreeze-freeze timed out");
	struct health_report h = judge(&vm, 0, 1, &st, 60, 0);
	ok(h.state == HEALTH_WARNING &&
		   has(&h, HEALTH_KIND_APP, HEALTH_WARNING, "failed 90s ago: guest-fsfreeze"),
	   "a failed app-consistent attempt is a warning: %s", h.n ? h.reasons[0].text : "");

	st = agent_fine();
	vm.app_interval_s = 3600;
	h = judge(&vm, 0, 1, &st, 60, NOW - 7000 * S);
	ok(h.state == HEALTH_HEALTHY, "an app point within twice the app interval: healthy");
	h = judge(&vm, 0, 1, &st, 60, NOW - 7300 * S);
	ok(has(&h, HEALTH_KIND_APP, HEALTH_WARNING, "no app-consistent point for 2h01m"),
	   "an app point older than twice the interval: %s", h.n ? h.reasons[0].text : "");
	h = judge(&vm, 0, 1, &st, 60, 0);
	ok(has(&h, HEALTH_KIND_APP, HEALTH_WARNING, "no app-consistent point yet"),
	   "no app point a day after enabling: %s", h.n ? h.reasons[0].text : "");
	vm.created_ns = NOW - 60 * S;
	h = judge(&vm, 0, 1, &st, 60, 0);
	ok(h.state == HEALTH_HEALTHY, "no app point a minute after enabling: healthy");
	vm.app_interval_s = INT64_MAX;
	vm.created_ns = INT64_MIN;
	h = judge(&vm, 0, 1, &st, 60, 0);
	ok(h.n <= 1, "an absurd app interval: no overflow");
}

static void test_many(void)
{
	struct ferry_vm vm = vm_protected();
	vm.state = FERRY_VM_ERROR;
	vm.marker_ns = NOW - 500 * S;
	vm.app_interval_s = 60;
	struct ferry_agent_status st = agent_fine();
	st.written_ns = NOW - 3600 * S;
	struct health_report h = judge(&vm, 0, 1, &st, 100, 0);
	ok(h.state == HEALTH_CRITICAL && h.n == 4, "error, lag, silent agent, app: %zu reasons",
	   h.n);
	char all[4096];
	health_reasons_join(&h, all, sizeof(all));
	ok(strstr(all, "VM in error") && strstr(all, "; lag 8m20s is over twice") &&
		   strstr(all, "; agent silent") && strstr(all, "; no app-consistent point"),
	   "joined: %s", all);
	char small[20];
	health_reasons_join(&h, small, sizeof(small));
	ok(strlen(small) == sizeof(small) - 1, "joined, cut to fit");

	/* Every reason's text fits, whatever the message's length. */
	memset(st.message, 'x', FERRY_STATUS_MESSAGE_MAX);
	st.message[FERRY_STATUS_MESSAGE_MAX] = 0;
	st.error = EIO;
	st.written_ns = NOW;
	memset(vm.error, '\x01', sizeof(vm.error) - 1);
	vm.error[sizeof(vm.error) - 1] = 0;
	h = judge(&vm, 0, 1, &st, 100, 0);
	/* A long message is cut where it is escaped, between escapes, with
	 * room left for the reason around it: never by the reason's own
	 * bound, which could split an escape or lose the reason's start. */
	int room = 1;
	const char *vm_error = "", *agent_error = "";
	for (size_t i = 0; i < h.n; i++) {
		room &= strlen(h.reasons[i].text) < HEALTH_REASON_MAX - 1;
		if (h.reasons[i].kind == HEALTH_KIND_VM_ERROR)
			vm_error = h.reasons[i].text;
		if (h.reasons[i].kind == HEALTH_KIND_AGENT_ERROR)
			agent_error = h.reasons[i].text;
	}
	ok(room && h.n == 4, "4 reasons, each shorter than its bound");
	const char *esc = strncmp(vm_error, "VM in error: ", 13) == 0 ? vm_error + 13 : "";
	size_t nesc = strlen(esc);
	int whole = nesc > 0 && nesc % 4 == 0;
	for (size_t i = 0; whole && i < nesc; i += 4)
		whole = memcmp(esc + i, "\\x01", 4) == 0;
	ok(whole, "the VM's error: escaped control characters, cut between escapes (%zu bytes)",
	   strlen(vm_error));
	const char *tail = strstr(agent_error, " ago: ");
	ok(strncmp(agent_error, "agent's last cycle failed ", 26) == 0 && tail &&
		   strspn(tail + 6, "x") == strlen(tail + 6) && strlen(tail + 6) > 400,
	   "the agent's message: its start kept, the message cut (%zu bytes)", strlen(agent_error));
}

static void test_target(void)
{
	struct ferry_vm vm = vm_protected();
	struct ferry_agent_status st = agent_fine();
	ok(health_default_rpo_target(&vm, &st, 0) == 180, "3 x a 60 s interval");
	st.interval_s = 2;
	ok(health_default_rpo_target(&vm, &st, 1) == 60, "at least 60 s");
	st.duration_ns = 100 * S;
	ok(health_default_rpo_target(&vm, &st, 1) == 300, "a cycle longer than the interval");
	ok(health_default_rpo_target(&vm, NULL, 0) == 900, "no status: 3 x the crash interval");
	ok(health_default_rpo_target(&vm, NULL, 1) == 60, "no status, qemu: 60");
	vm.crash_interval_s = 0;
	ok(health_default_rpo_target(&vm, NULL, 0) == 180, "no status, crash 0: 3 x 60");
	st.interval_s = UINT32_MAX;
	ok(health_default_rpo_target(&vm, &st, 0) == HEALTH_RPO_TARGET_MAX, "capped");

	int64_t t = 0;
	ok(health_parse_rpo_target("300", &t) == 0 && t == 300, "parse 300");
	ok(health_parse_rpo_target("0", &t) == -ERANGE, "0 refused");
	ok(health_parse_rpo_target("31622401", &t) == -ERANGE, "over a year refused");
	ok(health_parse_rpo_target("5m", &t) == -EINVAL && health_parse_rpo_target("", &t) < 0 &&
		   health_parse_rpo_target("-1", &t) < 0 && t == 300,
	   "junk refused, nothing written");

	enum health_state s;
	ok(health_state_parse("warning", &s) == 0 && s == HEALTH_WARNING &&
		   health_state_parse("critical", &s) == 0 && s == HEALTH_CRITICAL &&
		   health_state_parse("Healthy", &s) == -EINVAL,
	   "state names parse");
	ok(strcmp(health_nagios_name(HEALTH_CRITICAL), "CRITICAL") == 0, "Nagios names");
	char d[32];
	health_format_duration(3 * 86400 * S + 4 * 3600 * S, d, sizeof(d));
	ok(strcmp(d, "3d04h") == 0, "durations: %s", d);
}

int main(void)
{
	test_lag();
	test_states();
	test_cache_and_agent();
	test_app();
	test_many();
	test_target();
	return tap_done();
}
