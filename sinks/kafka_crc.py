"""CRC-32C for kafka-python in C.

kafka-python checksums every record batch it writes and reads with CRC-32C. It uses the `crc32c`
package when installed (LGPL, so not a dependency of this Apache-2.0 project) and otherwise a pure-Python
loop, which took 40 % of the consumer's time here. `google-crc32c` (Apache-2.0) computes the same
checksum in C; it is plugged in where kafka-python's record batches call it.
"""

from __future__ import annotations

import google_crc32c
import kafka.record.default_records as _records
import kafka.record.util as _util


def crc32c(data: memoryview | bytes) -> int:
    return int(google_crc32c.value(data.tobytes() if isinstance(data, memoryview) else data))


def install() -> None:
    if getattr(_util, "crc32c_c", None) is None:  # kafka-python found no C implementation of its own
        _records.calc_crc32c = crc32c


# Importing this module plugs the C checksum in: every module that makes a Kafka client imports it.
install()
