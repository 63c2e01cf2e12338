/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * VM definitions: golden domain.xml and qemu.args for a fixed definition,
 * hostile names that must stay inert in XML, in qemu's option syntax and in
 * the shell, refused inputs, stable UUIDs, the static address rule, and
 * (when virt-xml-validate is installed) libvirt's own schema check of the
 * generated XML.
 */
#include "ferry/vmdef.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ferry/util.h"
#include "tap.h"

static const struct ferry_vmdef_disk golden_disks[] = {
	{ "os", "/mnt/ferry/web1/failovers/drill/os.img" },
	{ "data", "/mnt/ferry/web1/failovers/drill/data.img" },
};
static const struct ferry_vmdef_nic golden_nics[] = {
	{ "52:54:00:12:34:56", "10.0.0.5/24", "prod-net-test" },
};

static struct ferry_vmdef golden_def(void)
{
	struct ferry_vmdef d = {
		.name = "web1-drill",
		.cpus = 2,
		.memory_mib = 1024,
		.disks = golden_disks,
		.n_disks = ARRAY_SIZE(golden_disks),
		.nics = golden_nics,
		.n_nics = ARRAY_SIZE(golden_nics),
		.kind = FERRY_VMDEF_TEST_FAILOVER,
		.source_vm = "web1",
		.recovery_point = "20261127T053000Z",
		.resource_group = "prod-ferry",
		.availability_set = "web-as",
		.subnet = "10.0.0.0/24",
	};
	for (int i = 0; i < 16; i++)
		d.uuid[i] = (uint8_t)(0x10 + i);
	return d;
}

static const char golden_xml[] =
	"<domain type='kvm'>\n"
	"  <name>web1-drill</name>\n"
	"  <uuid>10111213-1415-1617-1819-1a1b1c1d1e1f</uuid>\n"
	"  <metadata>\n"
	"    <ferry:failover xmlns:ferry='urn:ferry:vm:1'>\n"
	"      <ferry:kind>test-failover</ferry:kind>\n"
	"      <ferry:source-vm>web1</ferry:source-vm>\n"
	"      <ferry:recovery-point>20261127T053000Z</ferry:recovery-point>\n"
	"      <ferry:resource-group>prod-ferry</ferry:resource-group>\n"
	"      <ferry:availability-set>web-as</ferry:availability-set>\n"
	"      <ferry:subnet>10.0.0.0/24</ferry:subnet>\n"
	"      <ferry:disk name='os' target='vda'/>\n"
	"      <ferry:disk name='data' target='vdb'/>\n"
	"      <ferry:nic mac='52:54:00:12:34:56' address='10.0.0.5/24' network='prod-net-test'/>\n"
	"    </ferry:failover>\n"
	"  </metadata>\n"
	"  <memory unit='MiB'>1024</memory>\n"
	"  <vcpu>2</vcpu>\n"
	"  <os>\n"
	"    <type arch='x86_64' machine='pc'>hvm</type>\n"
	"  </os>\n"
	"  <features>\n"
	"    <acpi/>\n"
	"  </features>\n"
	"  <cpu mode='host-passthrough'/>\n"
	"  <on_poweroff>destroy</on_poweroff>\n"
	"  <on_reboot>restart</on_reboot>\n"
	"  <on_crash>destroy</on_crash>\n"
	"  <devices>\n"
	"    <disk type='file' device='disk'>\n"
	"      <driver name='qemu' type='raw' cache='none'/>\n"
	"      <source file='/mnt/ferry/web1/failovers/drill/os.img'>\n"
	"        <seclabel model='dac' relabel='no'/>\n"
	"      </source>\n"
	"      <target dev='vda' bus='virtio'/>\n"
	"      <boot order='1'/>\n"
	"    </disk>\n"
	"    <disk type='file' device='disk'>\n"
	"      <driver name='qemu' type='raw' cache='none'/>\n"
	"      <source file='/mnt/ferry/web1/failovers/drill/data.img'>\n"
	"        <seclabel model='dac' relabel='no'/>\n"
	"      </source>\n"
	"      <target dev='vdb' bus='virtio'/>\n"
	"      <boot order='2'/>\n"
	"    </disk>\n"
	"    <interface type='network'>\n"
	"      <mac address='52:54:00:12:34:56'/>\n"
	"      <source network='prod-net-test'/>\n"
	"      <model type='virtio'/>\n"
	"    </interface>\n"
	"    <serial type='pty'>\n"
	"      <target port='0'/>\n"
	"    </serial>\n"
	"    <console type='pty'>\n"
	"      <target type='serial' port='0'/>\n"
	"    </console>\n"
	"  </devices>\n"
	"</domain>\n";

static const char golden_args[] =
	"qemu-system-x86_64 -name guest=web1-drill -uuid 10111213-1415-1617-1819-1a1b1c1d1e1f"
	" -no-user-config -nodefaults -machine pc -accel kvm -accel tcg -cpu max -smp 2 -m 1024"
	" -display none -serial mon:stdio"
	" -drive file=/mnt/ferry/web1/failovers/drill/os.img,format=raw,if=none,id=disk0,cache=none"
	" -device virtio-blk-pci,drive=disk0,bootindex=1"
	" -drive file=/mnt/ferry/web1/failovers/drill/data.img,format=raw,if=none,id=disk1,cache=none"
	" -device virtio-blk-pci,drive=disk1,bootindex=2"
	" -netdev user,id=net0,restrict=on,net=10.0.0.0/24,dhcpstart=10.0.0.5"
	" -device virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56\n";

static void report_diff(const char *got, const char *want)
{
	size_t i = 0;
	while (got[i] && got[i] == want[i])
		i++;
	printf("#   first difference at byte %zu:\n#   got:  %.60s\n#   want: %.60s\n", i, got + i,
	       want + i);
}

static void test_golden(void)
{
	struct ferry_vmdef d = golden_def();
	_cleanup_free_ char *xml = NULL, *args = NULL;

	ok_r(ferry_vmdef_domain_xml(&d, &xml), "domain.xml of the fixed definition");
	ok(xml && strcmp(xml, golden_xml) == 0, "domain.xml matches the golden text");
	if (xml && strcmp(xml, golden_xml) != 0)
		report_diff(xml, golden_xml);
	ok_r(ferry_vmdef_qemu_args(&d, &args), "qemu.args of the fixed definition");
	ok(args && strcmp(args, golden_args) == 0, "qemu.args matches the golden text");
	if (args && strcmp(args, golden_args) != 0)
		report_diff(args, golden_args);
	ok(args && strchr(args, '\n') == args + strlen(args) - 1, "qemu.args is one line");

	/* A real failover on a bridge, TCG first, another cache mode. */
	d.kind = FERRY_VMDEF_FAILOVER;
	d.net = FERRY_VMDEF_NET_BRIDGE;
	d.accel = "tcg";
	d.cache = "writeback";
	_cleanup_free_ char *xml2 = NULL, *args2 = NULL;
	ok_r(ferry_vmdef_domain_xml(&d, &xml2), "domain.xml, failover on TCG");
	ok(xml2 && strstr(xml2, "<domain type='qemu'>") && strstr(xml2, "cache='writeback'") &&
		   strstr(xml2, "<ferry:kind>failover</ferry:kind>"),
	   "TCG domain is type qemu, cache mode and kind follow");
	ok_r(ferry_vmdef_qemu_args(&d, &args2), "qemu.args, failover on a bridge");
	ok(args2 && strstr(args2, " -netdev bridge,id=net0,br=prod-net-test ") &&
		   strstr(args2, " -accel tcg -cpu") && !strstr(args2, "-accel kvm") &&
		   strstr(args2, "cache=writeback"),
	   "bridge netdev, tcg only, writeback");

	/* No static address, or one qemu's user network cannot hand out. */
	struct ferry_vmdef_nic nics[] = {
		{ "52:54:00:00:00:01", NULL, "n1" },
		{ "52:54:00:00:00:02", "10.0.0.2/24", "n2", "virtio" },
		{ "52:54:00:00:00:03", "fd00::5/64", "n3", "e1000" },
	};
	d = golden_def();
	d.nics = nics;
	d.n_nics = ARRAY_SIZE(nics);
	_cleanup_free_ char *args3 = NULL;
	ok_r(ferry_vmdef_qemu_args(&d, &args3), "qemu.args with three NICs");
	ok(args3 && strstr(args3, " -netdev user,id=net0,restrict=on -device") &&
		   strstr(args3, " -netdev user,id=net1,restrict=on -device") &&
		   strstr(args3, " -netdev user,id=net2,restrict=on -device"),
	   "no DHCP start without a usable IPv4 address");
	ok(args3 && strstr(args3, " -device virtio-net-pci,netdev=net1,mac=52:54:00:00:00:02 ") &&
		   strstr(args3, " -device e1000,netdev=net2,mac=52:54:00:00:00:03\n"),
	   "NIC models: virtio is virtio-net-pci, others pass as they are");
	_cleanup_free_ char *xml3 = NULL;
	ok_r(ferry_vmdef_domain_xml(&d, &xml3), "domain.xml with three NICs");
	ok(xml3 && strstr(xml3, "<model type='e1000'/>"), "NIC model in the XML");
}

/* Runs the argument list through sh and returns what each word became. */
static int sh_words(const char *args, char *out, size_t outlen)
{
	char cmd[8192];
	/* Replace the emulator by a printf that shows each argument. */
	const char *rest = strchr(args, ' ');
	if (!rest)
		return -1;
	snprintf(cmd, sizeof(cmd), "printf '[%%s]\\n'%.*s", (int)(strlen(rest) - 1), rest);
	fflush(stdout);
	FILE *p = popen(cmd, "r");
	if (!p)
		return -1;
	size_t n = fread(out, 1, outlen - 1, p);
	out[n] = 0;
	return pclose(p) == 0 ? 0 : -1;
}

static void test_hostile(void)
{
	static const char evil_name[] = "x'; touch /tmp/ferry-pwned; echo '<a>&\"b\",c=$(id)`id`";
	static const char evil_path[] = "/mnt/a b/it's,file=/etc/passwd,x/$(reboot)<x>.img";
	struct ferry_vmdef_disk disks[] = { { "os<&>'\"", evil_path } };
	struct ferry_vmdef_nic nics[] = { { "52:54:00:12:34:56", "10.0.0.5/24", "net',br=evil" } };
	struct ferry_vmdef d = golden_def();
	d.name = evil_name;
	d.disks = disks;
	d.n_disks = 1;
	d.nics = nics;
	d.n_nics = 1;
	d.source_vm = "</ferry:source-vm><evil/>";
	d.resource_group = "rg&amp;";

	_cleanup_free_ char *xml = NULL, *args = NULL;
	ok_r(ferry_vmdef_domain_xml(&d, &xml), "domain.xml with hostile names");
	ok(xml && strstr(xml, "<name>x&apos;; touch /tmp/ferry-pwned; echo &apos;&lt;a&gt;&amp;"
			      "&quot;b&quot;,c=$(id)`id`</name>"),
	   "name escaped as XML text");
	ok(xml && strstr(xml, "<ferry:source-vm>&lt;/ferry:source-vm&gt;&lt;evil/&gt;") &&
		   !strstr(xml, "<evil/>"),
	   "no element injected through metadata");
	ok(xml && strstr(xml, "<ferry:resource-group>rg&amp;amp;</ferry:resource-group>"),
	   "ampersands escaped once more");
	ok(xml && strstr(xml, "<source file='/mnt/a b/it&apos;s,file=/etc/passwd,x/$(reboot)"
			      "&lt;x&gt;.img'>"),
	   "path escaped as an XML attribute");
	ok(xml && strstr(xml, "<ferry:disk name='os&lt;&amp;&gt;&apos;&quot;' target='vda'/>"),
	   "disk name escaped");

	ok_r(ferry_vmdef_qemu_args(&d, &args), "qemu.args with hostile names");
	ok(args && strchr(args, '\n') == args + strlen(args) - 1, "still one line");
	char words[8192] = "";
	ok(args && sh_words(args, words, sizeof(words)) == 0, "sh parses the command line");
	ok(access("/tmp/ferry-pwned", F_OK) != 0, "no command ran");
	printf("# the words sh passes to qemu:\n# ");
	for (const char *w = words; *w; w++)
		printf(*w == '\n' && w[1] ? "\n# " : "%c", *w);
	ok(strstr(words, "[guest=x'; touch /tmp/ferry-pwned; echo '<a>&\"b\",,c=$(id)`id`]\n") !=
		   NULL,
	   "the name reaches qemu as one word, its comma doubled");
	ok(strstr(words, "[file=/mnt/a b/it's,,file=/etc/passwd,,x/$(reboot)<x>.img,format=raw,"
			 "if=none,id=disk0,cache=none]\n") != NULL,
	   "the path reaches qemu as one word, no option injected");
	ok(strstr(words, "[bridge,") == NULL && strstr(words, "[user,id=net0,restrict=on,") != NULL,
	   "a network name cannot select a netdev in user mode");
	d.net = FERRY_VMDEF_NET_BRIDGE;
	_cleanup_free_ char *args2 = NULL;
	ok_r(ferry_vmdef_qemu_args(&d, &args2), "bridge mode with a hostile network name");
	ok(args2 && strstr(args2, " 'bridge,id=net0,br=net'\\'',,br=evil' "),
	   "bridge name quoted for the shell and for qemu");
}

static void test_refused(void)
{
	struct ferry_vmdef d;
	_cleanup_free_ char *s = NULL;
	struct ferry_vmdef_disk rel[] = { { "os", "os.img" } };
	struct ferry_vmdef_disk nl[] = { { "os", "/a\nb.img" } };
	struct ferry_vmdef_disk bad_utf8[] = { { "os", "/a\xc0\xaf"
						       "b.img" } };
	struct ferry_vmdef_nic multicast[] = { { "01:00:5e:00:00:01", NULL, "n" } };
	struct ferry_vmdef_nic shortmac[] = { { "52:54:00:12:34", NULL, "n" } };
	struct ferry_vmdef_nic nonet[] = { { "52:54:00:12:34:56", NULL, "" } };
	struct ferry_vmdef_nic badmodel[] = { { "52:54:00:12:34:56", NULL, "n", "e1000,x=y" } };

#define REFUSE(what, ...)                                                         \
	do {                                                                      \
		d = golden_def();                                                 \
		__VA_ARGS__;                                                      \
		ok(ferry_vmdef_domain_xml(&d, &s) == -EINVAL &&                   \
			   ferry_vmdef_qemu_args(&d, &s) == -EINVAL && s == NULL, \
		   "refused: %s", what);                                          \
	} while (0)
	REFUSE("no name", d.name = NULL);
	REFUSE("empty name", d.name = "");
	REFUSE("control character in name", d.name = "a\tb");
	REFUSE("zero CPUs", d.cpus = 0);
	REFUSE("zero memory", d.memory_mib = 0);
	REFUSE("no disks", d.n_disks = 0);
	REFUSE("relative disk path", d.disks = rel; d.n_disks = 1);
	REFUSE("newline in a path", d.disks = nl; d.n_disks = 1);
	REFUSE("overlong UTF-8 in a path", d.disks = bad_utf8; d.n_disks = 1);
	REFUSE("multicast MAC", d.nics = multicast);
	REFUSE("short MAC", d.nics = shortmac);
	REFUSE("NIC without network", d.nics = nonet);
	REFUSE("NIC model with options", d.nics = badmodel);
	REFUSE("machine with a comma", d.machine = "pc,accel=kvm");
	REFUSE("empty accelerator", d.accel = "kvm::tcg");
	REFUSE("accelerator with options", d.accel = "kvm,x=y");
	REFUSE("unknown cache mode", d.cache = "none,aio=native");
	REFUSE("metadata with a control character", d.availability_set = "a\x1b[2J");
#undef REFUSE

	d = golden_def();
	d.name = "caf\xc3\xa9-\xe2\x82\xac";
	_cleanup_free_ char *x = NULL;
	ok_r(ferry_vmdef_domain_xml(&d, &x), "UTF-8 names are accepted");
}

static void test_uuid(void)
{
	uint8_t a[16], b[16], c[16];
	char s[37];
	ferry_vmdef_uuid_from_seed("vault/web1/drill", 16, a);
	ferry_vmdef_uuid_from_seed("vault/web1/drill", 16, b);
	ferry_vmdef_uuid_from_seed("vault/web1/drill2", 17, c);
	ok(memcmp(a, b, 16) == 0 && memcmp(a, c, 16) != 0, "UUIDs are stable per seed");
	ferry_vmdef_uuid_format(a, s);
	ok(strlen(s) == 36 && s[8] == '-' && s[14] == '8' && strchr("89ab", s[19]),
	   "version 8, RFC variant: %s", s);
}

static void check_pick(const char *source, const char *subnet, const char *const *used, size_t n,
		       int want_r, const char *want)
{
	_cleanup_free_ char *got = NULL;
	int r = ferry_vmdef_pick_address(source, subnet, used, n, &got);
	if (want_r < 0)
		ok(r == want_r && !got, "%s in %s -> error %d (got %d)", source,
		   subnet ? subnet : "(unknown)", want_r, r);
	else
		ok(r >= 0 && got && strcmp(got, want) == 0, "%s in %s -> %s (got %s)", source,
		   subnet ? subnet : "(unknown)", want, got ? got : "error");
}

static void test_address(void)
{
	const char *const used[] = { "10.0.0.5", "10.0.0.2/24", "10.0.0.3", "fd00::1", "10.1.0.9" };
	const char *const full[] = { "192.168.7.2", "192.168.7.1" };
	const char *const bad[] = { "10.0.0.300" };

	check_pick("10.0.0.5/24", NULL, NULL, 0, 0, "10.0.0.5/24");
	check_pick("10.0.0.5/24", "", NULL, 0, 0, "10.0.0.5/24");
	check_pick("fd00::5/64", NULL, NULL, 0, 0, "fd00::5/64");
	check_pick("10.0.0.5/24", "10.0.0.0/24", NULL, 0, 0, "10.0.0.5/24");
	check_pick("10.0.0.6/24", "10.0.0.0/24", used, ARRAY_SIZE(used), 0, "10.0.0.6/24");
	check_pick("10.0.0.5/24", "10.0.0.0/24", used, ARRAY_SIZE(used), 0, "10.0.0.4/24");
	check_pick("10.0.0.5", "10.0.0.0/16", NULL, 0, 0, "10.0.0.5/16");
	check_pick("10.9.0.5/24", "10.1.0.0/24", used, ARRAY_SIZE(used), 0, "10.1.0.2/24");
	check_pick("10.1.0.1/24", "10.1.0.0/24", NULL, 0, 0, "10.1.0.2/24");
	check_pick("10.1.0.0/24", "10.1.0.0/24", NULL, 0, 0, "10.1.0.2/24");
	check_pick("10.1.0.255/24", "10.1.0.0/24", NULL, 0, 0, "10.1.0.2/24");
	check_pick("10.1.0.77/24", "10.1.0.5/24", NULL, 0, 0, "10.1.0.77/24");
	check_pick("fd00::5/64", "10.1.0.0/24", NULL, 0, 0, "10.1.0.2/24");
	check_pick("192.168.7.2/30", "192.168.7.0/30", full, ARRAY_SIZE(full), -ENOSPC, NULL);
	check_pick("192.168.7.2/31", "192.168.7.0/31", NULL, 0, -ENOSPC, NULL);
	check_pick("10.0.0.5/24", "fd00::/64", NULL, 0, -EAFNOSUPPORT, NULL);
	check_pick("10.0.0.5/24", "default-ferry", NULL, 0, 0, "10.0.0.5/24");
	check_pick("10.0.0.5/24", "10.0.0.0/x", NULL, 0, -EINVAL, NULL);
	check_pick("10.0.0.5/24", "10.0.0.0/33", NULL, 0, -EINVAL, NULL);
	check_pick("banana", "10.0.0.0/24", NULL, 0, -EINVAL, NULL);
	check_pick("10.0.0.5/24", "10.0.0.0/24", bad, 1, -EINVAL, NULL);
	check_pick("", "10.0.0.0/24", NULL, 0, -EINVAL, NULL);

	/* A crowded /16: the first free address is found past 1000 used ones. */
	static char storage[1000][20];
	const char *crowd[1000];
	for (int i = 0; i < 1000; i++) {
		int host = 2 + i;
		snprintf(storage[i], sizeof(storage[i]), "172.16.%d.%d", host / 256, host % 256);
		crowd[i] = storage[i];
	}
	check_pick("172.16.0.2/16", "172.16.0.0/16", crowd, 1000, 0, "172.16.3.234/16");
}

/* libvirt's schema check of the golden and the hostile XML, when installed. */
static void test_validate(void)
{
	fflush(stdout);
	if (system("command -v virt-xml-validate >/dev/null 2>&1") != 0) {
		printf("ok %d - # SKIP virt-xml-validate not installed (libvirt-clients)\n",
		       ++tap_n);
		return;
	}
	struct ferry_vmdef_disk disks[] = { { "os<&>", "/mnt/a b/it's,x<y>.img" } };
	struct ferry_vmdef d[2] = { golden_def(), golden_def() };
	d[1].name = "x'<a>&\"b\"";
	d[1].disks = disks;
	d[1].n_disks = 1;
	d[1].source_vm = "</ferry:source-vm><evil/>";
	d[1].accel = "tcg";
	for (int i = 0; i < 2; i++) {
		_cleanup_free_ char *xml = NULL;
		char path[] = "/tmp/ferry-vmdef-XXXXXX";
		int fd = mkstemp(path);
		ok_r(ferry_vmdef_domain_xml(&d[i], &xml), "domain.xml %d", i);
		ok(fd >= 0 && xml && write(fd, xml, strlen(xml)) == (ssize_t)strlen(xml),
		   "written to %s", path);
		if (fd >= 0)
			close(fd);
		char cmd[512];
		snprintf(cmd, sizeof(cmd),
			 "out=$(virt-xml-validate %s domain 2>&1) || "
			 "{ printf '%%s\\n' \"$out\" | sed 's/^/# /'; exit 1; }",
			 path);
		fflush(stdout);
		int st = system(cmd);
		ok(WIFEXITED(st) && WEXITSTATUS(st) == 0, "virt-xml-validate accepts domain.xml %d",
		   i);
		unlink(path);
	}
}

/* ---- what ferryfs shows: vm.conf, and definitions from the catalog ---- */

static const struct ferry_vmdef_resource conf_res[] = {
	{ "target-group", "prod-ferry" },
	{ "availability-set", "web-as" },
	{ "vm-cpus", "2" },
	{ "vm-memory-mib", "1024" },
	{ "nic.0", "mac=52:54:00:12:34:56,ip=10.0.0.5/24,model=virtio" },
};

static struct ferry_vm conf_vm(void)
{
	struct ferry_vm vm = {
		.id = 3,
		.name = "web1",
		.state = FERRY_VM_PROTECTED,
		.cache_url = "/srv/cache",
		.crash_interval_s = 300,
		.app_interval_s = 0,
		.retention_s = 86400,
		.created_ns = INT64_C(1795756200) * 1000000000, /* 2026-11-27T05:10:00Z */
		.applied_seq = 42,
		.marker_ns = INT64_C(1795757400) * 1000000000 + 5, /* 05:30:00Z */
	};
	return vm;
}

static const char golden_conf[] = "# ferry: definition and target settings of VM web1 (read-only)\n"
				  "name = web1\n"
				  "state = protected\n"
				  "cache-url = /srv/cache\n"
				  "crash-interval = 300\n"
				  "app-interval = 0\n"
				  "retention = 86400\n"
				  "created = 2026-11-27T05:10:00Z\n"
				  "applied-seq = 42\n"
				  "live-time = 2026-11-27T05:30:00Z\n"
				  "disk.0.name = os\n"
				  "disk.0.size = 8388608\n"
				  "disk.0.source = /dev/vg/web1-os\n"
				  "disk.1.name = data\n"
				  "disk.1.size = 1000000\n"
				  "disk.1.source = /dev/vg/web1-data\n"
				  "target-group = prod-ferry\n"
				  "availability-set = web-as\n"
				  "vm-cpus = 2\n"
				  "vm-memory-mib = 1024\n"
				  "nic.0 = mac=52:54:00:12:34:56,ip=10.0.0.5/24,model=virtio\n";

static void test_conf(void)
{
	struct ferry_vm vm = conf_vm();
	struct ferry_disk disks[] = {
		{ .idx = 0, .name = "os", .source_path = "/dev/vg/web1-os", .size = 8388608 },
		{ .idx = 1, .name = "data", .source_path = "/dev/vg/web1-data", .size = 1000000 },
	};
	_cleanup_free_ char *conf = NULL, *conf2 = NULL;
	size_t len = 0, len2 = 0;

	ok_r(ferry_vmdef_conf(&vm, disks, ARRAY_SIZE(disks), conf_res, ARRAY_SIZE(conf_res), &conf,
			      &len),
	     "vm.conf");
	ok(conf && strcmp(conf, golden_conf) == 0 && len == strlen(golden_conf),
	   "vm.conf matches the golden text");
	if (conf && strcmp(conf, golden_conf) != 0)
		report_diff(conf, golden_conf);

	/* An error is shown; no marker yet, no live time; a bad time is unknown. */
	snprintf(vm.error, sizeof(vm.error), "segment 7: bad digest");
	vm.state = FERRY_VM_ERROR;
	vm.marker_ns = 0;
	vm.created_ns = -1;
	ok_r(ferry_vmdef_conf(&vm, NULL, 0, NULL, 0, &conf2, &len2), "vm.conf, no disks");
	ok(conf2 && strstr(conf2, "\nstate = error\nerror = segment 7: bad digest\n") &&
		   strstr(conf2, "\ncreated = unknown\n") && !strstr(conf2, "live-time") &&
		   !strstr(conf2, "disk.") && len2 == strlen(conf2),
	   "vm.conf shows the error, no live time, an unknown creation time");
}

/* The failover of golden_def(), as the catalog describes it. */
struct fo_case {
	struct ferry_vm vm;
	struct ferry_failover fo;
	struct ferry_clone_disk disks[2];
	struct ferry_vmdef_resource res[ARRAY_SIZE(conf_res)];
	struct ferry_vmdef_failover f;
};

static void fo_case_init(struct fo_case *c)
{
	*c = (struct fo_case){
		.vm = conf_vm(),
		.fo = {
			.id = 7,
			.name = "drill",
			.kind = FERRY_FAILOVER_TEST,
			.point_name = "20261127T053000Z",
			.network = "prod-net-test",
			.subnet = "10.0.0.0/24",
		},
		.disks = { { .failover_id = 7, .idx = 0, .name = "os", .size = 8388608 },
			   { .failover_id = 7, .idx = 1, .name = "data", .size = 1000000 } },
	};
	memcpy(c->res, conf_res, sizeof(c->res));
	c->f = (struct ferry_vmdef_failover){
		.vm = &c->vm,
		.res = c->res,
		.n_res = ARRAY_SIZE(c->res),
		.failover = &c->fo,
		.disks = c->disks,
		.n_disks = ARRAY_SIZE(c->disks),
		.mount = "/mnt/ferry",
		.vault_id = "0123-vault",
	};
}

static void test_failover(void)
{
	struct fo_case c;
	struct ferry_vmdef d = golden_def();
	static const char seed[] = "0123-vault/web1/drill/7";
	_cleanup_free_ char *want_xml = NULL, *want_args = NULL, *xml = NULL, *args = NULL;

	fo_case_init(&c);
	ferry_vmdef_uuid_from_seed(seed, strlen(seed), d.uuid);
	ok_r(ferry_vmdef_domain_xml(&d, &want_xml), "domain.xml of the fixed definition, seeded");
	ok_r(ferry_vmdef_qemu_args(&d, &want_args), "qemu.args of the fixed definition, seeded");
	ok_r(ferry_vmdef_failover_domain_xml(&c.f, &xml), "domain.xml of a failover");
	ok(xml && want_xml && strcmp(xml, want_xml) == 0,
	   "the failover's domain.xml is the fixed definition's");
	if (xml && want_xml && strcmp(xml, want_xml) != 0)
		report_diff(xml, want_xml);
	ok_r(ferry_vmdef_failover_qemu_args(&c.f, &args), "qemu.args of a failover");
	ok(args && want_args && strcmp(args, want_args) == 0,
	   "the failover's qemu.args is the fixed definition's");

	/* The address moves into the target subnet; a named subnet keeps it;
	 * bad numbers fall back to defaults. */
	fo_case_init(&c);
	snprintf(c.fo.subnet, sizeof(c.fo.subnet), "10.9.0.0/24");
	c.res[2].value = "two";
	c.res[3].value = "0";
	c.res[4].value = "mac=52:54:00:12:34:56,ip=192.168.1.5/24,model=e1000";
	c.fo.kind = FERRY_FAILOVER_REAL;
	snprintf(c.fo.accel, sizeof(c.fo.accel), "tcg");
	_cleanup_free_ char *xml2 = NULL, *args2 = NULL;
	ok_r(ferry_vmdef_failover_domain_xml(&c.f, &xml2), "domain.xml, address to renumber");
	ok(xml2 && strstr(xml2, " address='10.9.0.2/24' ") && strstr(xml2, "<vcpu>1</vcpu>") &&
		   strstr(xml2, "<memory unit='MiB'>1024</memory>") &&
		   strstr(xml2, "<model type='e1000'/>") && strstr(xml2, "<domain type='qemu'>") &&
		   strstr(xml2, "<ferry:kind>failover</ferry:kind>"),
	   "renumbered address, default CPUs and memory, model, accelerator and kind");
	snprintf(c.fo.subnet, sizeof(c.fo.subnet), "default-ferry");
	ok_r(ferry_vmdef_failover_qemu_args(&c.f, &args2), "qemu.args, subnet by name");
	ok(args2 && strstr(args2, ",net=192.168.1.0/24,dhcpstart=192.168.1.5 ") &&
		   !strstr(args2, "restrict=on"),
	   "a subnet given by name keeps the address; a real failover is not restricted");

	/* Refused: a NIC without a MAC, too long a field, no disks, too long
	 * a path, a missing mount. */
	_cleanup_free_ char *none = NULL;
	fo_case_init(&c);
	c.res[4].value = "ip=10.0.0.5/24";
	ok(ferry_vmdef_failover_domain_xml(&c.f, &none) == -EINVAL && !none, "NIC without a MAC");
	c.res[4].value = "mac=52:54:00:12:34:56:78";
	ok(ferry_vmdef_failover_qemu_args(&c.f, &none) == -EINVAL && !none, "MAC too long");
	c.res[4].value = "mac=52:54:00:12:34:56,model";
	ok(ferry_vmdef_failover_qemu_args(&c.f, &none) == -EINVAL && !none, "key without value");
	/* Read by the one NIC parser: what the CLI refused, a failover does
	 * too (it used to ignore unknown keys and take any address). */
	c.res[4].value = "mac=52:54:00:12:34:56,vlan=3";
	ok(ferry_vmdef_failover_domain_xml(&c.f, &none) == -EINVAL && !none, "unknown NIC key");
	c.res[4].value = "mac=52:54:00:12:34:56,ip=fd00::5/64";
	ok(ferry_vmdef_failover_qemu_args(&c.f, &none) == -EINVAL && !none, "IPv6 NIC address");
	/* A stored upper-case MAC comes out in the canonical lower case. */
	c.res[4].value = "mac=52:54:00:AB:CD:EF";
	ok_r(ferry_vmdef_failover_domain_xml(&c.f, &none), "upper-case MAC");
	ok(none && strstr(none, "<mac address='52:54:00:ab:cd:ef'/>") &&
		   strstr(none, "<model type='virtio'/>"),
	   "lower-case MAC, default model");
	free(none);
	none = NULL;
	fo_case_init(&c);
	c.f.n_disks = 0;
	ok(ferry_vmdef_failover_domain_xml(&c.f, &none) == -EINVAL && !none, "no disks");
	fo_case_init(&c);
	char longmount[1100];
	memset(longmount, 'm', sizeof(longmount) - 1);
	longmount[0] = '/';
	longmount[sizeof(longmount) - 1] = 0;
	c.f.mount = longmount;
	ok(ferry_vmdef_failover_domain_xml(&c.f, &none) == -ENAMETOOLONG && !none,
	   "image path of 1 KiB");
	c.f.mount = NULL;
	ok(ferry_vmdef_failover_qemu_args(&c.f, &none) == -EINVAL && !none, "no mount");
}

/* --nic and the nic.N resource: one parser. The cases where the CLI's
 * parser and the failover's used to disagree come first. */
static void test_nic_spec(void)
{
	static const struct {
		const char *spec, *canon; /* canon NULL: refused */
	} cases[] = {
		/* the reader ignored unknown keys; the CLI refused them */
		{ "mac=52:54:00:12:34:56,vlan=3", NULL },
		/* the reader took an empty model as the default; the CLI refused it */
		{ "mac=52:54:00:12:34:56,model=", NULL },
		/* models of 17-32 characters: the reader took them */
		{ "mac=52:54:00:12:34:56,model=abcdefghijklmnopq", NULL },
		{ "mac=52:54:00:12:34:56,model=abcdefghijklmnop",
		  "mac=52:54:00:12:34:56,model=abcdefghijklmnop" },
		{ "mac=52:54:00:12:34:56,model=-x", NULL },
		/* the reader took any address: IPv6, no prefix, garbage */
		{ "mac=52:54:00:12:34:56,ip=fd00::5/64", NULL },
		{ "mac=52:54:00:12:34:56,ip=10.0.0.5", NULL },
		{ "mac=52:54:00:12:34:56,ip=host.example", NULL },
		/* the CLI's sscanf took signs, spaces, leading zeros and long prefixes */
		{ "mac=52:54:00:12:34:56,ip=010.0.0.5/24", NULL },
		{ "mac=52:54:00:12:34:56,ip=+10.0.0.5/24", NULL },
		{ "mac=52:54:00:12:34:56,ip=10.0.0.5/024", NULL },
		{ "mac=52:54:00:12:34:56,ip=10.0.0.5/33", NULL },
		{ "mac=+2:54:00:12:34:56", NULL },
		{ "mac= 2:54:00:12:34:56", NULL },
		{ "mac=52-54-00-12-34-56", NULL },
		/* a multicast MAC: the CLI stored it, the renderer refused it later */
		{ "mac=01:00:5e:00:00:01", NULL },
		/* a key twice: both took the last one */
		{ "mac=52:54:00:12:34:56,mac=52:54:00:12:34:57", NULL },
		{ "mac=52:54:00:12:34:56,model=e1000,model=virtio", NULL },
		/* the reader kept a MAC's case and left the model out */
		{ "mac=52:54:00:AB:CD:EF", "mac=52:54:00:ab:cd:ef,model=virtio" },
		/* where they agreed */
		{ "mac=52:54:00:12:34:56,ip=10.0.0.5/24,model=e1000",
		  "mac=52:54:00:12:34:56,ip=10.0.0.5/24,model=e1000" },
		{ "model=rtl8139,ip=192.168.1.5/05,mac=52:54:00:12:34:56",
		  "mac=52:54:00:12:34:56,ip=192.168.1.5/5,model=rtl8139" },
		{ "mac=52:54:00:12:34:56,ip=,,model=virtio", "mac=52:54:00:12:34:56,model=virtio" },
		{ ",mac=52:54:00:12:34:56,", "mac=52:54:00:12:34:56,model=virtio" },
		{ "mac=52:54:00:12:34:56,ip=255.255.255.255/32,model=abcdefghijklmnop",
		  "mac=52:54:00:12:34:56,ip=255.255.255.255/32,model=abcdefghijklmnop" },
		{ "", NULL },
		{ "ip=10.0.0.5/24", NULL },
		{ "mac", NULL },
		{ "mac=52:54:00:12:34:567", NULL },
		{ "=52:54:00:12:34:56", NULL },
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct ferry_vmdef_nic_spec n, back;
		char buf[FERRY_VMDEF_NIC_SPEC_SIZE];
		int r = ferry_vmdef_nic_parse(cases[i].spec, &n);

		if (!cases[i].canon) {
			ok(r == -EINVAL, "NIC '%s' refused", cases[i].spec);
			continue;
		}
		ok(r == 0 && ferry_vmdef_nic_format(&n, buf, sizeof(buf)) == 0 &&
			   strcmp(buf, cases[i].canon) == 0,
		   "NIC '%s' is '%s'", cases[i].spec, cases[i].canon);
		ok(ferry_vmdef_nic_parse(buf, &back) == 0 && memcmp(&n, &back, sizeof(n)) == 0,
		   "its canonical form reads back the same");
	}

	struct ferry_vmdef_nic_spec n;
	char small[16];
	ok(ferry_vmdef_nic_parse("mac=52:54:00:12:34:56", &n) == 0 &&
		   ferry_vmdef_nic_format(&n, small, sizeof(small)) == -ENOBUFS,
	   "too small a buffer is -ENOBUFS");
	ok(ferry_vmdef_nic_parse(NULL, &n) == -EINVAL, "NULL spec");
}

int main(void)
{
	test_golden();
	test_hostile();
	test_refused();
	test_uuid();
	test_address();
	test_validate();
	test_conf();
	test_failover();
	test_nic_spec();
	return tap_done();
}
