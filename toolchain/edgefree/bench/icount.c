/*
 * icount.c: a QEMU TCG plugin (API v1, QEMU 7.2) that counts the guest
 * instructions a program executes between marker system calls.
 *
 * The guest marks a region with syscall(MARKER, tag, phase): phase 0 opens
 * region `tag`, phase 1 closes it. At each marker the plugin records the
 * instructions executed so far by the marking thread and by all threads; at
 * exit it writes one line per marker to the file named by `out=`:
 *
 *     tag phase thread_instructions all_instructions
 *
 * Counts are kept per guest thread (vCPU index), so threads never race on one
 * counter and the result repeats exactly for a deterministic program.
 *
 * Build: gcc -shared -fPIC -O2 -I <qemu>/include/qemu icount.c -o libicount.so
 * Use:   qemu-aarch64 -plugin libicount.so,out=counts.txt,marker=4000 prog
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define MAX_THREADS 1024
#define MAX_MARKS 65536

struct mark {
    uint64_t tag, phase, thread, all;
};

static uint64_t executed[MAX_THREADS];
static struct mark marks[MAX_MARKS];
static size_t n_marks;
static int64_t marker = 4000;
static const char *out_path = "icount.txt";

static void on_tb_exec(unsigned int thread, void *n_insns)
{
    /* vCPU indexes are reused after a thread exits; a cumulative counter is fine. */
    executed[thread < MAX_THREADS ? thread : MAX_THREADS - 1] += (uintptr_t)n_insns;
}

static void on_tb_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    qemu_plugin_register_vcpu_tb_exec_cb(tb, on_tb_exec, QEMU_PLUGIN_CB_NO_REGS,
                                         (void *)(uintptr_t)qemu_plugin_tb_n_insns(tb));
}

static void on_syscall(qemu_plugin_id_t id, unsigned int thread, int64_t num,
                       uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4,
                       uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8)
{
    uint64_t all = 0;

    if (num != marker || n_marks == MAX_MARKS) {
        return;
    }
    for (size_t i = 0; i < MAX_THREADS; i++) {
        all += executed[i];
    }
    marks[n_marks++] = (struct mark){a1, a2, executed[thread < MAX_THREADS ? thread : MAX_THREADS - 1], all};
}

static void write_marks(qemu_plugin_id_t id, void *unused)
{
    FILE *out = fopen(out_path, "w");

    if (!out) {
        perror(out_path);
        return;
    }
    fprintf(out, "# icount v1: tag phase thread_instructions all_instructions\n");
    for (size_t i = 0; i < n_marks; i++) {
        fprintf(out, "%" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 "\n",
                marks[i].tag, marks[i].phase, marks[i].thread, marks[i].all);
    }
    fclose(out);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                           int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "out=", 4) == 0) {
            out_path = argv[i] + 4;
        } else if (strncmp(argv[i], "marker=", 7) == 0) {
            marker = strtoll(argv[i] + 7, NULL, 10);
        } else {
            fprintf(stderr, "icount: unknown argument %s (known: out=FILE, marker=N)\n", argv[i]);
            return 1;
        }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_tb_translate);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    qemu_plugin_register_atexit_cb(id, write_marks, NULL);
    return 0;
}
