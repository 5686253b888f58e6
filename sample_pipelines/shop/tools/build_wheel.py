"""Builds a pure-Python wheel of src/shop with the standard library only."""

import base64
import hashlib
import sys
import zipfile
from pathlib import Path

NAME, VERSION = "shop", "0.1.0"
out = Path(sys.argv[1])
out.mkdir(exist_ok=True)
wheel = out / f"{NAME}-{VERSION}-py3-none-any.whl"
dist_info = f"{NAME}-{VERSION}.dist-info"
files = {f"{NAME}/{p.name}": p.read_bytes() for p in sorted(Path("src/shop").glob("*.py"))}
METADATA = f"Metadata-Version: 2.1\nName: {NAME}\nVersion: {VERSION}\n"
WHEEL = "Wheel-Version: 1.0\nGenerator: build_wheel.py\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
files[f"{dist_info}/METADATA"] = METADATA.encode()
files[f"{dist_info}/WHEEL"] = WHEEL.encode()
record = []
for name, data in files.items():
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    record.append(f"{name},sha256={digest},{len(data)}")
record.append(f"{dist_info}/RECORD,,")
files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
    for name, data in files.items():
        zf.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data)
print(f"built {wheel} ({wheel.stat().st_size} bytes, {len(files)} files)")
