/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The fault plan (include/ferry/fault.h): what parses and what does not,
 * which call of a site fires (the Nth, or the Nth and every later one),
 * name matching, a short write through ferry_pwrite_all, a failed fsync
 * (an atomic write keeps the old contents), blob puts, and crashes in a
 * child process: before a put (no blob) and after it (the blob is there).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ferry/blobs.h"
#include "ferry/fault.h"
#include "ferry/util.h"
#include "tap.h"

static void test_parse(void)
{
	static const char *const good[] = {
		"",
		"write:eio",
		"put~packs/:enospc@3",
		"commit:crash@2+",
		"any:crash-after@17",
		"write:short@1,fsync:eio@2",
	};
	static const char *const bad[] = {
		"write",
		"nowhere:eio",
		"write:melt",
		"fsync:short",
		"put~:eio",
		"write:eio@0",
		"write:eio@",
		"write:eio@x",
		"write:eio@-1",
		"write:eio,",
		"write:eio@99999999999999999999",
	};
	for (size_t i = 0; i < ARRAY_SIZE(good); i++)
		ok(ferry_fault_plan(good[i]) == 0, "'%s' parses", good[i]);
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
		ok(ferry_fault_plan(bad[i]) == -EINVAL, "'%s' is refused", bad[i]);
	ferry_fault_plan(NULL);
}

static void test_counting(void)
{
	ferry_fault_plan("get:eio@2");
	ok(ferry_fault_before(FERRY_FAULT_GET, "a") == 0, "the first get goes through");
	ok(ferry_fault_before(FERRY_FAULT_GET, "a") == -EIO, "the second fails");
	ok(ferry_fault_before(FERRY_FAULT_GET, "a") == 0, "the third goes through (no +)");
	ok(ferry_fault_before(FERRY_FAULT_PUT, "a") == 0, "another site is not counted");

	ferry_fault_plan("delete:enospc@2+");
	ok(ferry_fault_before(FERRY_FAULT_DELETE, NULL) == 0, "N+: the first goes through");
	ok(ferry_fault_before(FERRY_FAULT_DELETE, NULL) == -ENOSPC, "N+: the second fails");
	ok(ferry_fault_before(FERRY_FAULT_DELETE, NULL) == -ENOSPC, "N+: and every later one");

	ferry_fault_plan("put~packs/:eio");
	ok(ferry_fault_before(FERRY_FAULT_PUT, "segments/vm/1.seg") == 0,
	   "a name without the match is not counted");
	ok(ferry_fault_before(FERRY_FAULT_PUT, "packs/00/1.pack") == -EIO,
	   "the first matching name fails");
	ferry_fault_plan(NULL);
	ok(ferry_fault_before(FERRY_FAULT_PUT, "packs/00/1.pack") == 0,
	   "a cleared plan injects nothing");
}

static void test_files(const char *dir)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/f", dir);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	ok(fd >= 0, "a scratch file");
	char buf[8192];
	memset(buf, 'x', sizeof(buf));

	ferry_fault_plan("write:short");
	ok(ferry_pwrite_all(fd, buf, sizeof(buf), 0) == -ENOSPC, "a short write fails with ENOSPC");
	struct stat st;
	ok(fstat(fd, &st) == 0 && st.st_size == (off_t)sizeof(buf) / 2,
	   "and left half the bytes (%lld)", (long long)st.st_size);
	ok_r(ferry_pwrite_all(fd, buf, sizeof(buf), 0), "the next write goes through");

	ferry_fault_plan("fsync:eio");
	ok(ferry_fsync(fd) == -EIO, "a failed fsync");
	ok(ferry_write_file_atomic(path, "new", 3) == 0, "the next fsync goes through");
	ferry_fault_plan("fsync:eio@1+");
	ok(ferry_write_file_atomic(path, "newer", 5) == -EIO, "an atomic write whose fsync fails");
	ferry_fault_plan(NULL);
	void *got = NULL;
	size_t len = 0;
	ok(ferry_read_file(path, &got, &len) == 0 && len == 3 && memcmp(got, "new", 3) == 0,
	   "keeps the old contents");
	free(got);
	close(fd);
}

static void test_blobs(const char *dir)
{
	char url[4200];
	snprintf(url, sizeof(url), "file://%s/blobs", dir);
	struct ferry_blobs *b = NULL;
	ok_r(ferry_blobs_open(url, 1, &b), "a local blobs location");
	if (!b)
		return;
	ferry_fault_plan("put:eio");
	ok(ferry_blobs_put(b, "x/one", "1", 1, 0) == -EIO, "an injected put error");
	uint64_t size;
	ok(ferry_blobs_size(b, "x/one", &size) == -ENOENT, "leaves no blob");

	/* crash-after: the child dies after the put landed, before it returns. */
	ferry_fault_plan("put:crash-after");
	pid_t pid = fork();
	if (pid == 0) {
		ferry_blobs_put(b, "x/two", "2", 1, 0);
		_exit(0);
	}
	int status = 0;
	waitpid(pid, &status, 0);
	ferry_fault_plan(NULL);
	ok(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "crash-after kills the process");
	ok(ferry_blobs_size(b, "x/two", &size) == 0 && size == 1, "after its put landed");

	ferry_fault_plan("put:crash");
	pid = fork();
	if (pid == 0) {
		ferry_blobs_put(b, "x/three", "3", 1, 0);
		_exit(0);
	}
	waitpid(pid, &status, 0);
	ferry_fault_plan(NULL);
	ok(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "crash kills the process");
	ok(ferry_blobs_size(b, "x/three", &size) == -ENOENT, "before its put");
	ferry_blobs_free(b);
}

int main(void)
{
	if (!ferry_fault_supported()) {
		printf("1..0 # SKIP built without -Dfault_injection=true\n");
		return 0;
	}
	char dir[] = "/tmp/ferry-test-fault.XXXXXX";
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	test_parse();
	test_counting();
	test_files(dir);
	test_blobs(dir);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		printf("# could not remove %s\n", dir);
	return tap_done();
}
