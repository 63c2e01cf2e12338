/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Runs a libFuzzer target over every file of its corpus directories, so
 * the corpus (seeds and every crash ever found) is replayed in each test
 * run without clang. Fails if a directory holds no input at all.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "ferry/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int main(int argc, char **argv)
{
	unsigned n = 0;
	for (int i = 1; i < argc; i++) {
		DIR *d = opendir(argv[i]);
		if (!d) {
			fprintf(stderr, "replay: cannot open corpus %s\n", argv[i]);
			return 1;
		}
		struct dirent *de;
		while ((de = readdir(d))) {
			if (de->d_name[0] == '.')
				continue;
			_cleanup_free_ char *path = NULL;
			if (asprintf(&path, "%s/%s", argv[i], de->d_name) < 0)
				abort();
			void *buf;
			size_t len;
			if (ferry_read_file(path, &buf, &len) < 0) {
				fprintf(stderr, "replay: cannot read %s\n", path);
				closedir(d);
				return 1;
			}
			LLVMFuzzerTestOneInput(buf, len);
			free(buf);
			n++;
		}
		closedir(d);
	}
	printf("replayed %u inputs\n", n);
	return n > 0 ? 0 : 1;
}
