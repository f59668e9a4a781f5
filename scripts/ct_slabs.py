"""Cuts a single-volume NIfTI dataset (MM-WHS CT: ID_image.nii.gz + ID_label.nii.gz) into two
slabs along the slice axis, written as IDa_* and IDb_* under an output folder, so that one slab
can train and the other be held out (`val=1`). With one CT scan there is no other patient to
hold out; the held-out slab is another part of the same patient's heart, which is what the
results say. Standard library only; 8-bit voxels (the shared MM-WHS case) only.

    python3 scripts/ct_slabs.py ../shared/data/mmwhs_ct runs/ct-slabs
"""

import gzip
import os
import struct
import sys


def read(path):
    raw = gzip.open(path).read()
    header = bytearray(raw[:348])
    (sizeof_hdr,) = struct.unpack("<i", header[:4])
    if sizeof_hdr != 348:
        sys.exit(f"{path}: not a little-endian NIfTI-1 file (sizeof_hdr {sizeof_hdr})")
    dims = struct.unpack("<8h", header[40:56])
    (datatype,) = struct.unpack("<h", header[70:72])
    (vox_offset,) = struct.unpack("<f", header[108:112])
    if dims[0] != 3 or datatype != 2:
        sys.exit(f"{path}: expected a 3D uint8 volume, found dim {dims[:4]} datatype {datatype}")
    x, y, z = dims[1:4]
    data = raw[int(vox_offset) : int(vox_offset) + x * y * z]
    if len(data) != x * y * z:
        sys.exit(f"{path}: {len(data)} voxel bytes, expected {x * y * z}")
    return header, (x, y, z), data


def write(path, header, sides, data, z0):
    header = bytearray(header)
    x, y, z = sides
    header[40:56] = struct.pack("<8h", 3, x, y, z, 1, 1, 1, 1)
    header[108:112] = struct.pack("<f", 352.0)
    # The slab's first slice moves the origin by z0 slices along the third column of the
    # sform (qoffset likewise along the z spacing): the slab stays where it was in the scan.
    srow = [list(struct.unpack("<4f", header[280 + 16 * r : 296 + 16 * r])) for r in range(3)]
    for r in range(3):
        srow[r][3] += z0 * srow[r][2]
        header[280 + 16 * r : 296 + 16 * r] = struct.pack("<4f", *srow[r])
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(bytes(header) + b"\0\0\0\0" + data)


def main():
    src, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    ids = sorted(n[: -len("_image.nii.gz")] for n in os.listdir(src) if n.endswith("_image.nii.gz"))
    if not ids:
        sys.exit(f"{src}: no ID_image.nii.gz files")
    for id_ in ids:
        for kind in ("image", "label"):
            header, (x, y, z), data = read(os.path.join(src, f"{id_}_{kind}.nii.gz"))
            half = z // 2
            plane = x * y
            # The upper slab is "a" (sorted first: trains), the lower "b" (held out by val=1):
            # in MM-WHS case 1010 only the upper slab holds all seven structures (the aorta and
            # the pulmonary artery end above the lower one).
            for name, z0, z1 in (("a", half, z), ("b", 0, half)):
                path = os.path.join(out, f"{id_}{name}_{kind}.nii.gz")
                write(path, header, (x, y, z1 - z0), data[z0 * plane : z1 * plane], z0)
                print(f"{path}: {x} x {y} x {z1 - z0}")


if __name__ == "__main__":
    main()
