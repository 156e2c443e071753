/* An experiment for bench/keep-cost.sh: moves the page-cache work of
 * keeping every event off the traced thread. While `ftail record -d DIR`
 * runs, it watches DIR for event files and, as each one grows, allocates
 * its new pages in the page cache from this process (its own shared
 * mapping, MADV_POPULATE_WRITE): the thread's own populate then only maps
 * pages that exist. With `fallocate`, each file's blocks are also
 * reserved ahead (FALLOC_FL_KEEP_SIZE, 1 GiB) when first seen. With
 * `idle`, it only watches (the control). Stops when DIR/.. holds STOP or
 * after 60 s.
 * Usage: prefault DIR pop|fallocate|both|idle */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#define MAX_FILES 64
#define STEP (2L << 20)

struct file { char name[256]; long done; int falloc; };

static struct file files[MAX_FILES];
static int nfiles;

static struct file *find(const char *name) {
    for (int i = 0; i < nfiles; i++)
        if (strcmp(files[i].name, name) == 0) return &files[i];
    if (nfiles == MAX_FILES) return NULL;
    snprintf(files[nfiles].name, sizeof files[nfiles].name, "%s", name);
    return &files[nfiles++];
}

/* Populates [f->done, size) of DIR/name in STEP pieces; 1 if it did any. */
static int advance(int dfd, struct file *f, int pop, int falloc) {
    int fd = openat(dfd, f->name, O_RDWR);
    if (fd < 0) return 0;
    struct stat st;
    int did = 0;
    if (falloc && !f->falloc) {
        f->falloc = 1;
        fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 1L << 30);
    }
    if (pop && fstat(fd, &st) == 0 && st.st_size > f->done) {
        char *p = mmap(0, st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p != MAP_FAILED) {
            for (long at = f->done; at < st.st_size; at += STEP) {
                long len = st.st_size - at < STEP ? st.st_size - at : STEP;
                if (madvise(p + at, len, MADV_POPULATE_WRITE) != 0) break;
                f->done = at + len;
            }
            munmap(p, st.st_size);
            did = 1;
        }
    }
    close(fd);
    return did;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    int pop = !strcmp(argv[2], "pop") || !strcmp(argv[2], "both");
    int falloc = !strcmp(argv[2], "fallocate") || !strcmp(argv[2], "both");
    char stop[4096];
    snprintf(stop, sizeof stop, "%s/../STOP", argv[1]);
    struct timespec nap = {0, 200000};
    for (long round = 0; round < 300000 && access(stop, F_OK) != 0; round++) {
        DIR *d = opendir(argv[1]);
        int did = 0;
        if (d) {
            struct dirent *e;
            while ((e = readdir(d))) {
                size_t l = strlen(e->d_name);
                if (l < 7 || strcmp(e->d_name + l - 7, ".events") != 0) continue;
                struct file *f = find(e->d_name);
                if (f) did |= advance(dirfd(d), f, pop, falloc);
            }
            closedir(d);
        }
        if (!did) nanosleep(&nap, 0);
    }
    return 0;
}
