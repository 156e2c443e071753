/* A fixed hash seed for the differential builds of jq: jq seeds its
 * object hashing from arc4random() or getentropy(), so the calls it makes
 * (collisions, key order) would differ from run to run. Built with
 * -Darc4random=ftail_test_seed -Dgetentropy=ftail_test_entropy. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

uint32_t ftail_test_seed(void) { return 0x5eed1234; }

int ftail_test_entropy(void *buf, size_t len) {
    memset(buf, 0x5e, len);
    return 0;
}
