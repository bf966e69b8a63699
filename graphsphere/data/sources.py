"""Real data sets that ship in Debian packages: declared once, fetched, verified and cached one way.

Each data set is a :class:`DataSource`: the Debian package that carries it, the package versions it is
known from, where its files sit inside the package, and the size and sha256 of every file it keeps.
:func:`fetch` downloads the package's ``.deb`` with ``apt-get download`` (no root needed), reads it
with Python alone (a ``.deb`` is an ``ar`` archive holding ``data.tar.xz``/``.gz``/``.zst``; ``dpkg-deb``
is used only for ``.zst`` when the ``zstandard`` module is missing), keeps the declared files, checks
every checksum, and only then moves the folder into the cache, so a crash or a kill never leaves a
half-made data set where a reader would take it for a whole one. A lock file serialises processes
fetching the same data set. A cached folder is verified on every :func:`fetch`: one that fails is
fetched again, never used.

Where ``apt-get`` is missing or cannot get the package (an air-gapped cluster), the error says which
``.deb`` to bring and the command that takes it: ``graphsphere data fetch NAME --deb FILE``.

Cache root: ``$GRAPHSPHERE_DATA``, else ``$GRAPHSPHERE_CACHE/data``, else ``~/.cache/graphsphere/data``.
A data set lives in ``<root>/<name>/``, its files under the relative paths of :attr:`DataSource.files`
(``cgal-meshes`` keeps the package's own two folders, ``meshes/`` and ``points_3/``; the others are flat).

This module is long because it carries, checked in, the size and sha256 of the 160 files it declares
(one line each); the code is under 500 lines.

Example
-------
>>> from graphsphere.data import sources
>>> [s.name for s in sources.SOURCES.values()]
['cgal-meshes', 'ferret', 'fields-stations']
>>> src = sources.SOURCES["fields-stations"]
>>> src.package, src.versions, [f for f, _, _ in src.files]
('r-cran-fields', ('14.1-1',), ['COmonthlyMet.rda', 'NorthAmericanRainfall.rda'])
>>> folder = sources.fetch("fields-stations")       # doctest: +SKIP
>>> sorted(p.name for p in folder.iterdir())          # doctest: +SKIP
['COmonthlyMet.rda', 'NorthAmericanRainfall.rda']
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

try:  # POSIX only; without it (Windows) concurrent fetches of one data set are not serialised
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

__all__ = [
    "DataSource", "SOURCES", "DataError", "DataUnavailableError", "DataVerificationError",
    "data_dir", "fetch", "verify", "list_sources", "source", "deb_version",
]


class DataError(RuntimeError):
    """Base class of the errors of this module."""


class DataUnavailableError(DataError):
    """The package could not be had here (no ``apt-get``, no network, unknown package); the message
    carries the manual steps."""


class DataVerificationError(DataError):
    """Files missing or different from their recorded checksums."""


@dataclass(frozen=True)
class DataSource:
    """One data set carried by a Debian package.

    Parameters
    ----------
    name : str
        The data set's name (``graphsphere data fetch NAME``) and its folder in the cache.
    package, source_package : str
        The binary package to download and the source package it is built from (which names its
        folder in a Debian archive's ``pool/``).
    versions : tuple of str
        Package versions whose files have these checksums. Another version is accepted when its
        files match all the same.
    architecture : str
        ``"all"`` for an architecture-independent package; otherwise the data files are the same in
        every architecture's build and any one will do (``"any"``).
    description, licence : str
        What the data is; its licence as the package's copyright file states it.
    prefix : str
        Folder inside the archive that holds the kept files; their local paths are relative to it.
    files : tuple of (relative path, size in bytes, sha256)
        Every file kept, with its checksum.
    inner_archive : str or None
        Path, in the package, of a tarball that holds the files (``prefix`` then applies inside it).
    """

    name: str
    package: str
    source_package: str
    versions: tuple[str, ...]
    architecture: str
    description: str
    licence: str
    prefix: str
    files: tuple[tuple[str, int, str], ...]
    inner_archive: str | None = None

    @property
    def size(self) -> int:
        """Total size of the kept files, in bytes."""
        return sum(size for _, size, _ in self.files)

    def deb_file_name(self, version: str | None = None) -> str:
        """The ``.deb`` name Debian gives the package, e.g. ``libcgal-demo_5.5.1-2_all.deb``."""
        arch = "all" if self.architecture == "all" else "<arch>"
        return f"{self.package}_{version or self.versions[0]}_{arch}.deb"

    def pool_path(self, version: str | None = None) -> str:
        """Where the ``.deb`` sits in a Debian archive (``pool/main/...``), below any mirror's root."""
        src = self.source_package
        initial = src[:4] if src.startswith("lib") else src[0]
        return f"pool/main/{initial}/{src}/{self.deb_file_name(version)}"


# --- the declared files: (relative path, bytes, sha256), computed from the packages named ----------

#: libcgal-demo 5.5.1-2, usr/share/doc/libcgal-dev/data.tar.gz, below data/: every .off, .ply and .stl.
_CGAL_MESHES = (
    ("meshes/3torus.off", 830, "5c3a2ae836434b8dabb84912dffff97f3e9be61d7557bc94c440488d491e133a"),
    ("meshes/ALSTOM_TEST4.off", 56172, "c409568de47129a3c92bc9edbf1add747777e1964743721f432d11b92df3802d"),
    ("meshes/ChineseDragon-10kv.off", 781187, "f633bdfaac7a0f99e0fab668c34862f0c26f341cfdb4665bab282d79b788db02"),
    ("meshes/P.off", 500, "1a6ed37d18ed098859777239dcb87773801ac4804cee500da92e0d2578553808"),
    ("meshes/anchor.off", 28912, "5009b3400b73ef199b6ac9a24a27f4f76e1aa7b71d957a50cb6dcbe09868ff3b"),
    ("meshes/anchor_dense.off", 324342, "8d66f31c54745535811768ab1e04e580c441a6824a4a64e0accf241c3763adb7"),
    ("meshes/armadillo.off", 1622939, "6f7f3ca1abc506569466b72f2f59d49493a284e7376d7a7e23c08115ec8cec4e"),
    ("meshes/b9.ply", 560063, "4f9ea90c42295f49c49ed9baa48b583549efc284c8707e72d198a5cd7aeeb7f1"),
    ("meshes/b9_mesh.off", 485178, "b4427e4d7bd79324eaf962747e9e7243511a548a8963e266b63687d4c017df1d"),
    ("meshes/beam.off", 176, "9fedd91778fd8b3d791574f719b9b170e93f21351eeca3efe9487ccaaaf4c976"),
    ("meshes/bear.off", 875954, "058f6ce62635e5f86958adea9706a8dca3ebe4fae76a0d32b8318d107d40bda6"),
    ("meshes/bear_bis.off", 621697, "b83c7ae380036e1c102afb15404d68f9bb4a62af2dbe8dfd120d1cfba40b53d0"),
    ("meshes/blade.off", 661818, "088832ae983887c8ed7a3eaf1993eff172edcf35adc2811f9237b635fb2d2798"),
    ("meshes/blob-closed.off", 12113, "e673579960f3b25361bb5ea4bd9e520baa582994361b91abcbb303e1383b06a7"),
    ("meshes/blob.off", 11921, "01008093fb7b30be2865d579a018bc930e7462c08ffd42773f452e74a4347b0c"),
    ("meshes/blobby-shuffled.off", 175935, "2aab06cf1984dbd376103fe8d809e184d35c6e667968604e955f4021b13df25f"),
    ("meshes/blobby.off", 126496, "ab217f67fefdf8a8e01563d09135f05ab02330064a3c0180570546887d01b7f1"),
    ("meshes/blobby_3cc.off", 109339, "62399b7868bdc6b918a01dca23ecf7d99935689331d1878a01b2307e20140c30"),
    ("meshes/boeing.off", 101857, "a50af346f5fda821844907e2f020f27a9d399dc5c39f4fbb5344f13ca6002a7a"),
    ("meshes/bones.off", 127191, "004bd26f0029910eb2e2fd38b7ca11ea05dd4182e247c0fb778533b860dd7ab2"),
    ("meshes/bull.off", 395461, "5c7b9631f8c278c12b30c0eea0b72da871504674516daf7d7eaaf5fa4154224a"),
    ("meshes/bunny00.off", 2613072, "ab651cb04955c161efaeb079035a1e5e1f0e0d1f816a2df67beaea68f393ff2b"),
    ("meshes/cactus.off", 45774, "333a41cbf5e30f2f675392adb7b0f7fb3f5919b39f15d2ae280830e662247925"),
    ("meshes/camel.off", 632052, "9ac960a9fee27e6fcc6baaa2340260834625084ee20f4a97194212404e650a22"),
    ("meshes/cheese-box.off", 637, "1b6d033081b61e6388ef53447f6a093d98272bdda7b875e0cd5e2249990c7cc6"),
    ("meshes/cheese.off", 645555, "713ace843a5f0a8cc78a16ed0cedd5a5a0a2897d4bff02ac833a3b7e9382efb4"),
    ("meshes/colored_tetra.ply", 699, "a312d8cfc8e6f0d7508b165fb3dca1ad524a8b306707d7117a8722991be77622"),
    ("meshes/corner.off", 271, "b256f6c5be903a1bab058951a8a030726cd2fb788951829391484d661e7520ee"),
    ("meshes/corner_poly.off", 193, "89b3e64932d9c7e67d81bb4c59ad7a33846c6e8b9616ae2318740cb8973661e0"),
    ("meshes/corner_tris_with_hole.off", 771, "f2e3e32c3b0358619cb0f88b78738195380eb7d8041712c99a940b415f227cda"),
    ("meshes/corner_with_hole.off", 261, "5f04227aa4830ddc210860768ee627a1644074cbb2e85459a0c44c28d1209427"),
    ("meshes/corner_with_sharp_edge.off", 324, "183b8d997999dddb7b99af41e02aa4a0cb03ec4f4165fe52f0a80536788e58c5"),
    ("meshes/couplingdown.off", 114267, "01fc9017b44a803b1130f8f5d51f0c7d8bbfa27b908f5166c498fe21e57f2284"),
    ("meshes/cow.off", 182966, "1c5a25c3047fc6b14dd0c962d3562b1796671422ab4634f9d46f9f23814cd54a"),
    ("meshes/cross.off", 1409, "712151027be1e259be1a4049a383ad8884ced0282d4c64e75d0cc4d24e6005ab"),
    ("meshes/cross_quad.off", 751, "9eed989818630e33e72d3ec58b7a71a5b478f6a9948aaf88be820281ce17732b"),
    ("meshes/cube-meshed.off", 36781, "5244c3f5f3eab5011aa44fd09d2702be91defbbee9b58e01e2aca4e9937c3c8a"),
    ("meshes/cube-ouvert.off", 168, "4d60d8b4f599ee1f572588aaf160e04c3d52082004da00a39494be689ab91f3a"),
    ("meshes/cube-shuffled.off", 507, "43f880302aed8d6b04ee179f6023a977190605ee3b8ef6b9451562db4cfdd408"),
    ("meshes/cube.off", 179, "17e2f9b1f9385f6cb605ac3978b9ca3c64dcf7724517620534518e964cebce73"),
    ("meshes/cube4-shuffled.off", 463, "239ace4dcb7fbd057e4154f0dfb19ecfdbc0ddd543a59a3fac61b0fab22295f5"),
    ("meshes/cube_poly.off", 197, "991b3067f7f1bb964b366e137be38f090a6062398d9f6552c28268dd329d8d8b"),
    ("meshes/cube_quad.off", 137, "ba2e934b51a4179afe8d9a0b2bc8bd574ac3eb8bec220a2553897512ce38b53b"),
    ("meshes/cylinder.off", 64140, "0fa30f4621ce360a11888221adbee39960d4101971e3accc6962b44f10e0fbfe"),
    ("meshes/cylinder_locally_refined.off", 527954, "17f34209dba7ab70158711b76f4e840b8b696e866fd08fb29461a4227108dca0"),
    ("meshes/degtri_sliding.off", 123, "45488b9cc792d2f7e3978c1cc7faa9b9fa095a31c8665670e0c91d0f4d034095"),
    ("meshes/dino.off", 302502, "acca16a64f425dd705375ada71ed4cf046beb2a1a06629a3c2325bb0530475db"),
    ("meshes/diplodocus.off", 1645616, "661fdac29eca4b205e354da112b3cbfd08dcfae07df989234b71421e62521c96"),
    ("meshes/double-torus-3-holes.off", 9540, "12243967111005f77d8b1bf8fa09df9984738f5ed85a20603eead8a2dc7e0055"),
    ("meshes/double-torus-example.off", 9926, "cbdce362ccb0cb1c5dfa88be469e8c88e38a9cb5796df0cd554c810f612613d9"),
    ("meshes/dragknob.off", 8701, "4411436ff04757c16ad1c08d631c86ef7e968f1e026193e668c66a19951ca10c"),
    ("meshes/eight.off", 17174, "58fa129fbd64d519034b12c73ecb463ae55832710aa34fddd0504debd044f71d"),
    ("meshes/elephant-with-holes.off", 156045, "0262a20c433534623af10f2b8b3aeb9067792486195cac47738bc6abea0cb8d0"),
    ("meshes/elephant.off", 173779, "be4e1ea68f5f840a3d2ada69d828222e76a57d9e25b21e19a9deacd3f2328e02"),
    ("meshes/elk.off", 100617, "7f1229fd3de0b4fc0884bbbfbd056a57ff0cb0f7afd71b5168a84209cc585abb"),
    ("meshes/ellipe0.003.off", 93669, "201e70477156a4d18e2e662a3e8b12316d985838258a4589afb7e8f468717372"),
    ("meshes/ellipsoid.off", 7917, "6f3271c0c9d8398c0ad1399230fa7f7fc1b20c90116d44b7ddbd2e5c42fb7470"),
    ("meshes/fandisk-box.off", 541, "52f286ad723e572544e65a3cd858cd30fe8f50c6f34fe633107e7c223ab2c329"),
    ("meshes/fandisk.off", 375752, "edffb263f037b023757259befd5532fccb48bdc3c35a1da2e11e235a647bd050"),
    ("meshes/fandisk_large.off", 1305785, "afd1fda7ca6b7175945d329c365d18f52da50987b8957b58e6f1fb3c07f5555f"),
    ("meshes/femur.off", 251581, "75d208fabf7a7b134cfcf2171bad68c331e3bff55309ffe38a01a7b31352fbc6"),
    ("meshes/fold.off", 648, "f76c81a6301a2a5abd6b387cf687d419bddf4bf44668559c6ced84726e34d560"),
    ("meshes/geosphere.off", 8773, "18a485e58b82c1415886c908d499bb7ffc75800123c1587880c8d71fc1b3e5fb"),
    ("meshes/hand.off", 71233, "cfcf1562726167ca704a091a8651bfd1d72f6eb96b4b2819321f0520721b35c7"),
    ("meshes/handle.off", 67271, "df86377baeaa1ed1a437710e0364a72af06d3bca21b84a57cd1b46a64f67f054"),
    ("meshes/head.off", 85741, "75aecfdbf9c0386dd839f5bf0322fb5a889ed7efd31d040f125e383041b4b919"),
    ("meshes/hedra.off", 249, "5a699dc4e9a4499ddb794a78a2ab99fd95459a4300482cdeee56d54f70351355"),
    ("meshes/hedra_open.off", 231, "71d105c72ff6e9f9385a4601d7d99d9f68539f7a2f8b787d6b8c7915fda6be38"),
    ("meshes/helmet.off", 28742, "0669ab781a80570cfdd2932b06a7c33f89fd855a9ddb69dc45e50082253a5a32"),
    ("meshes/hole.off", 676, "744cc1f252e97644e64ed55414a7f4f93b15beef9e9c6b6596e929d66d2a7b79"),
    ("meshes/holes.off", 265882, "ddbef17f3e418c9c2eb1eddae0da64926f67ca52a37bf57b0f0004588388b970"),
    ("meshes/homer.off", 300504, "99396cceb6f97e9681545d5c718d4ed87da3ceb78d22afb0218d570e9f0a0873"),
    ("meshes/horizons-domain.off", 605, "f5111ff4165cc1682ac5a231fa15b50d4c4674aeb0b294a1d1d77f4e17780b9a"),
    ("meshes/horizons.off", 146325, "d46d1272317bf7e1603b6bb42274f06e53c05f5421fc3e122a0e32fa1e11d43b"),
    ("meshes/icosahedron.off", 662, "a2e76fb48a977ca406945389e804bf43ad433e418abb920211215c80b1a52df6"),
    ("meshes/in.off", 50, "80b1e512ced8b12dde281a0cadee5d64ca139aec3720bc3c2e8f5f1ee20daa71"),
    ("meshes/itemb.off", 13808, "128bee89f751f57fd174544334a965ebc2593ff92cf10d88d4efec193617a963"),
    ("meshes/joint.off", 11743, "a412da1a4b90a1d018d44e0b06307ee692da4afd255975d2a93945e091098649"),
    ("meshes/knot.off", 129530, "99fd008c5ba804d0d779501a8ef11b0784646504d8801b62a359cae768081ed0"),
    ("meshes/knot1.off", 202480, "13d9d2f3459189630680dad6a3b5528d5cc794967b791580a0e1f6642903d030"),
    ("meshes/knot2.off", 369930, "6c90e93f1a966abd73847d40909a90c0b2067affdd471a27b50c2d4416142c06"),
    ("meshes/larger_sphere.off", 70572, "f78270e4a9a720b35c7706f588fc34aa49ac6f2d59b4c342c230754106877b6e"),
    ("meshes/lion-head.off", 535298, "cf159eeb12a3f3f345e57448693e9f0d115f3f6f38fd1d4519b336cede849289"),
    ("meshes/lion.off", 478529, "5749c7a8d89a7fbda350e842c6b5f233595ea6e6201604087219325af9c82070"),
    ("meshes/man.off", 1196593, "9f04482c1028de539f02319c476d6c95141e9fbc389e9d469041ab63096de5d4"),
    ("meshes/mannequin-devil.off", 837210, "9424b7132b58766984051fb7757543e88972f91fe7e9565d4e5b715b204f74a5"),
    ("meshes/mask_cone.off", 76758, "30db79368dfa66bfa49ce763a413dcdace5e688da65d15f1adf537d086e391da"),
    ("meshes/mech-holes-shark.off", 378552, "2ad3d8fb970b319eb8a32040664c25d4e01370f20ad57f4fde5c63fef3b6cca9"),
    ("meshes/mesh_with_border.off", 39189, "e97c6e444d0263c14226e30eb38357ea80689465bfd25e7f327776ba6904eaf8"),
    ("meshes/mesh_with_colors.off", 370, "9c4def46f93c91d8aadef1778ba3f95ccac0c50391784ee88c4dcc347077451f"),
    ("meshes/mpi.off", 3112, "7e3d929e317426ef261ec6c331693fac6bd82808ad210629ecb2ceb65ad1e3af"),
    ("meshes/mpi_triang.off", 4557, "6afd6a7b0aa6143263221a2609b932499bdaca242a605196e6df9b0432d97c84"),
    ("meshes/mushroom.off", 144009, "03768b314714676d9305361c7c124be3b2c991c59fe8c752a49047115b4dfa00"),
    ("meshes/nefertiti.off", 16436, "d8b13239b988d0262fbc91e88da1d314eeb1b284c327a3fe76089c2b54886ccf"),
    ("meshes/negative.off", 239, "5d6a2903567d7cb3608cf663c7f6f8507100f16ff6995dba2aed1dc9ba6713d9"),
    ("meshes/oblong-shuffled.off", 19400, "db6d65782037c44ed7d215d51087a8965af2f6b657b3e0d45205b362f040b489"),
    ("meshes/oblong.off", 23542, "1024a074f8ff0896c3a7ab5bcac72b6f03a69ab71b2fbf3edbd206b2acbd928e"),
    ("meshes/octahedron.off", 226, "e6945c7c61d9e8ff1bd81175c13c32b28b99a3c74ed7a05a4145e1ef577a3bbb"),
    ("meshes/open_cube.off", 175, "82ef9a66fd80b9a4e1ad4e2b740994d520d99a2331c8d82b8efd8addd75d7ee9"),
    ("meshes/part.off", 9715, "ffec9fae51770a524bd973724bb69babf3cae11ef7564fb630790cb64a75b00b"),
    ("meshes/patch-01.off", 57417, "8f6ed0542d0455add61c3de0c0e4bfead9ae272207a87b5a397fe1e63725cc72"),
    ("meshes/patch-13.off", 9778, "2dda408668596df9e310bf4320e4882f5fe2b4e1e3bb99a07d2565f31e342141"),
    ("meshes/patch-20.off", 25241, "ce3e4416ed4fbd756950a42dfa562f83ce5ed9da586850f556bbf87a27bdd455"),
    ("meshes/patch-21.off", 9910, "b6f49af1f793d3892a985469722da62c704f98e0000772837ce88ac757d72abe"),
    ("meshes/patch-23.off", 6559, "82011c673570a427291947231c25c6ec943af44db26a1612ff95d2736a994093"),
    ("meshes/patch-30.off", 25724, "5d2f4e1b5c2b1903419fa4290a4a78d25b8d1386cd28ecc974d99b4e3c6f2bd7"),
    ("meshes/pig.off", 25193, "7a164eee3a5c3630687974862cb587082e25fca1e8cc99d43bd3626bb5f87ff2"),
    ("meshes/pig.stl", 842484, "584a6e2684053f4112865544115b60a8b3efb66917312db6608d9a152cf30406"),
    ("meshes/pinion.off", 39828, "191a8cdfa3807e09d7dffb4bdc94dabe1231b4594001ca134100a9a32e996599"),
    ("meshes/pinion_small.off", 37701, "f52e7546230062d30b1998e601bb5228f132cdfd81a1994433b7bffe50fc5d62"),
    ("meshes/pipe.off", 8010, "de951aa3c0c9f6617b422e833116a1523fd41abfb588444f71eeed42378ef9bf"),
    ("meshes/plane.off", 53767, "abc2a721ef2140f6cea599bc39e400430f5eec27e73381ae0774e14d74dddf55"),
    ("meshes/poly2x^2+y^2-0.062500.off", 54276, "6927d315682e0d8144b2c6cf4ea436fc0d0443634222c231e166ec8c51c93bf7"),
    ("meshes/polygon_mesh.off", 1062413, "9e04b8499c824406751cc4450b6f82b9220f7c199ec7bb2c8ce89087dd3a2a4c"),
    ("meshes/prim.off", 243, "c47aadca02566bfba130ea65268ed905e5a7a898b2dbb177ca5fc38ae39fef6d"),
    ("meshes/pyramid.off", 117, "f631905c0a6dc744f48d68bcc7d42978ca4bf0c2328e34246a09f24c2cbe6d3e"),
    ("meshes/quad.off", 44, "1cad64b1054f8201bb88d1cb2028d1c9c2d11c0c359310651d7a6a4367f2b21d"),
    ("meshes/quads_to_stitch.off", 269, "7c8491c32f50ef2466b45c257af00ea173f722e5e65d6312d87a0d2bfc17e5b7"),
    ("meshes/quint_tris.off", 683, "9c65a5ce0fdb01681decd05304ebbe8dc727b712d51c5168f5c08a4eb032e839"),
    ("meshes/reference_tetrahedron.off", 72, "9427c6bf1573f8bc631dcb03bd9fff529c3378e19a890245c12bac38c3ae5181"),
    ("meshes/refined_elephant.off", 3981567, "a170eed4ef33ef412a72b824d791f69ea59ee5f5a7c12dc1ae9077b6eb030650"),
    ("meshes/retinal.off", 229719, "02547bcd1f28149862ff28056614418c0fca73033dfec1a07e8e91e4c78544b7"),
    ("meshes/rotor.off", 34194, "8db85ca5041eef6d952e48f0553a25fddb42f237b80a37b7aff096b8df3aca32"),
    ("meshes/rotor_small.off", 146642, "4bb13c727456322d90aa21cf5270de83bde77435ea1c77ab1e264e1e1800bed2"),
    ("meshes/small_cube.off", 349, "0190f8449004e3b02d3347017bd81deb97b787a48ade3f2bcdceb03b96e8f66e"),
    ("meshes/sphere.off", 7816, "082e3da6cd66aef1d054c53675e1268016d8836095117990424d5b1398981b6f"),
    ("meshes/sphere.ply", 12059, "f4647ffec3b3ccc44783f7f3589e0d0d6cf33fccbdbdd90b8dcd92a4aaff8593"),
    ("meshes/sphere.stl", 16084, "49cda356cd549b5a2da02ccc75ff54f1b571f222c97894854585b741c2f46f7c"),
    ("meshes/sphere966.off", 50057, "a11a37ac10c4b917c8512f5631c12c4cbd545d7a8a33d06891ea9b7e94f16e30"),
    ("meshes/spool.off", 37094, "84ec2367becf6994f96055fa88aaf3a00df1fdd84bd0fa615bdc043c9944b7b1"),
    ("meshes/star.off", 453, "8a7a48b6641373552134c30cf9c36888ade73e9def5bafe100b7536b9740078f"),
    ("meshes/tet-shuffled.off", 66, "cf0f19223be28fe274e46d320390e67179fe45efb10884865b9c35b30541c3e7"),
    ("meshes/tetra_intersected_by_triangle.off", 124,
     "a4b7fbabe17490ade61439b1966942acaff22ae9e37ea9fafff5681c7c8f9e8e"),
    ("meshes/tetrahedron.off", 91, "087cb70c4a1f23a8a75271f8695f4f130ef189552627a5adeee34144235beeac"),
    ("meshes/three_peaks.off", 110458, "6b985fb7f6f2a6dc15dd311758aa1eeb0725cfb32bcacef8a767b910c9a2d8d4"),
    ("meshes/torus_quad.off", 1143, "11289c9d3af76c47a05a76e8d43d2e7d55423d9d9c4ff73e37b1736529932e82"),
    ("meshes/translated-cube.off", 220, "7ea5b147ea0f3eeba1af0d110b4ea5afaa106abc640be8914c22addcedaedbc1"),
    ("meshes/triangle.off", 36, "fb24d942999fec35fed007b5f84ca44064f763225bc01c58ef70e281a1eff083"),
    ("meshes/triangular_hole.off", 102, "24be10a51a98a916c9e11bf700a375e08957874efbcadb66eb680dfc8e746244"),
    ("meshes/triceratops.off", 175263, "0fb444933884486a09eb4329a832f15ab792590f2a5bb75385d157e654ddbf5c"),
    ("meshes/tripod.off", 1168, "f31df43fc9209d8863eb48b0bb1ca088169ffab52d5d93096e87d6bee26c982d"),
    ("meshes/turbine.off", 597560, "8ae52b6b325a05e0755983706ab55aba0f42d3ea0569dd29b33cdcb16c20f4c8"),
    ("meshes/u.off", 4582, "f2f3e8c8aa64c2e4caebef5c676097a12a48e3c1337c544c5c7d1201ab982592"),
    ("points_3/b9_training.ply", 691539, "94c05829a78b1ebbb6882dda0e5e263f30331ff10820a0beb61843001ad0b46d"),
    ("points_3/ball.ply", 1782378, "98a8f9ed8cc2fc136a65b55d657ea3219e6cdb2fbf2e2184d790017a22235b11"),
    ("points_3/building.ply", 5684714, "8604fd5448ed716f58df787a7696481f26b3c69587f88048fc48223467ac71f7"),
    ("points_3/circles.ply", 53064, "0306046bf6cca5bd5dd29bf75e11ec54b4725a9290cd4e145bf2e4cab62517a7"),
    ("points_3/colors.ply", 384, "963a34682347291f3f10af624495a9b362e46ab0703a7535e38e25ab0142604b"),
    ("points_3/example.ply", 417, "1b09ca11e05a891c6bcb87ee1985e002fb5a2ccb1b6201605061af79d5546d20"),
    ("points_3/hippo1.ply", 293208, "74e38ebd5a8fd25340be46bca0543fc40224b2966ec6880305609da2b32c173f"),
    ("points_3/hippo2.ply", 210792, "5c4db5d3baf4f234a5e0d235315bc5d20c40741a3d7be0fbe3d35618c4735f01"),
    ("points_3/kitten.off", 208414, "40ef4701be2871e74096d6f2cd8ecbb13df3fd6e5ce9688bd1986a3ab2c945d9"),
    ("points_3/oni.ply", 69096, "9f388381125e1289c8041e008c7e6b594426deef06ad41a497d15072c268a9f2"),
    ("points_3/spheres.ply", 286728, "d04ce5c7180d984e428b5a07734021457de2bc95a2e3548d22fec2bc06b00110"),
)
#: ferret-datasets 7.6.0-5, usr/share/ferret-vis/data/.
_FERRET = (
    ("coads_climatology.cdf", 5447472, "b94f55034d13d63f33e2153afddc0c5e00347076c35ab3e34937aec38ce9c4c1"),
    ("etopo20.cdf", 2348512, "ba27cb2fa5f2f2b2c76e5a576f0a291fd11ebb3da99ed9b466150c0a064a1db4"),
    ("etopo60.cdf", 264088, "36b4cb72a01cf4c6dc155e52dca6c4ff148aea5958d056d3136fe2789646c4ad"),
    ("monthly_navy_winds.cdf", 11104376, "225a9e4fed7bb1a7b558afb662abbe2dc5e3d3db4100fa019cb994f10b115faa"),
)
#: r-cran-fields 14.1-1, usr/lib/R/site-library/fields/data/.
_FIELDS = (
    ("COmonthlyMet.rda", 1294782, "5bcdd004aa8db0430fac663e992af2e33dbf63e72c3f206f999866e3f4c346e5"),
    ("NorthAmericanRainfall.rda", 100801, "d2d115e108c4c39a40bc3cce9c6553b3850cb98e642dbf23d36c479cbb66d558"),
)


#: The data sets, by name.
SOURCES: dict[str, DataSource] = {s.name: s for s in (
    DataSource(
        name="cgal-meshes", package="libcgal-demo", source_package="cgal", versions=("5.5.1-2",),
        architecture="all",
        description="154 triangle/polygon meshes of CGAL's demos and tests (143 in meshes/, 11 point sets in "
                    "points_3/): animals, humans, mechanical parts, primitives, surface patches",
        licence="CC0-1.0 for files without their own notice, as the package's copyright file states "
                "(CGAL itself is GPL-3+/LGPL-3+)",
        prefix="data/", files=_CGAL_MESHES, inner_archive="usr/share/doc/libcgal-dev/data.tar.gz"),
    DataSource(
        name="ferret", package="ferret-datasets", source_package="ferret-vis", versions=("7.6.0-5",),
        architecture="all",
        description="global grids, netCDF-3: monthly Navy surface winds 1982-1992 (2.5 deg), COADS monthly "
                    "climatology, ETOPO relief at 60' and 20'",
        licence="Ferret License Agreement (NOAA PMEL; public domain, redistribution with notice)",
        prefix="usr/share/ferret-vis/data/", files=_FERRET),
    DataSource(
        name="fields-stations", package="r-cran-fields", source_package="r-cran-fields", versions=("14.1-1",),
        architecture="any",
        description="weather stations, R data files: 376 Colorado stations' monthly Tmax/Tmin/precipitation "
                    "1895-1997 (COmonthlyMet), 1,720 North American rainfall stations",
        licence="GPL-2+",
        prefix="usr/lib/R/site-library/fields/data/", files=_FIELDS),
)}


def source(name: str | DataSource) -> DataSource:
    """The :class:`DataSource` called ``name`` (a ``DataSource`` passes through)."""
    if isinstance(name, DataSource):
        return name
    try:
        return SOURCES[name]
    except KeyError:
        raise KeyError(f"unknown data set {name!r}; known: {', '.join(SOURCES)} "
                       "(`graphsphere data list` describes them)") from None


def data_dir() -> Path:
    """The cache root: ``$GRAPHSPHERE_DATA``, else ``$GRAPHSPHERE_CACHE/data``, else
    ``~/.cache/graphsphere/data``.

    >>> import os
    >>> os.environ["GRAPHSPHERE_DATA"] = "/tmp/gs-data"
    >>> str(data_dir())
    '/tmp/gs-data'
    >>> del os.environ["GRAPHSPHERE_DATA"]
    """
    if os.environ.get("GRAPHSPHERE_DATA"):
        return Path(os.environ["GRAPHSPHERE_DATA"]).expanduser()
    if os.environ.get("GRAPHSPHERE_CACHE"):
        return Path(os.environ["GRAPHSPHERE_CACHE"]).expanduser() / "data"
    return Path.home() / ".cache" / "graphsphere" / "data"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _problems(src: DataSource, folder: Path) -> list[str]:
    """What is wrong with ``folder`` as a copy of ``src`` (empty: nothing)."""
    if not folder.is_dir():
        return [f"{folder} does not exist"]
    problems = []
    for rel, size, digest in src.files:
        path = folder / rel
        if not path.is_file():
            problems.append(f"{rel}: missing")
        elif path.stat().st_size != size:  # cheap test first: a truncated file needs no hashing
            problems.append(f"{rel}: {path.stat().st_size} bytes, expected {size}")
        elif _sha256(path) != digest:
            problems.append(f"{rel}: sha256 differs from the recorded one")
    return problems


def _summary(problems: list[str], limit: int = 5) -> str:
    more = f"; and {len(problems) - limit} more" if len(problems) > limit else ""
    return "; ".join(problems[:limit]) + more


def verify(name: str | DataSource) -> Path:
    """Check the cached copy of a data set against its checksums, without fetching anything.

    Returns the folder; raises :class:`DataVerificationError` naming the missing or differing files
    (and the command that repairs them) otherwise.

    >>> verify("ferret")                       # doctest: +SKIP
    PosixPath('/home/me/.cache/graphsphere/data/ferret')
    """
    src = source(name)
    folder = data_dir() / src.name
    if not folder.is_dir():
        raise DataVerificationError(f"data set {src.name!r} is not fetched yet (it would live in {folder}); "
                                    f"`graphsphere data fetch {src.name}` fetches it")
    problems = _problems(src, folder)
    if problems:
        raise DataVerificationError(
            f"data set {src.name!r} in {folder} is not intact: {_summary(problems)}. "
            f"`graphsphere data fetch {src.name}` fetches it again.")
    return folder


def list_sources() -> list[dict]:
    """One dict per data set: name, package, versions, description, licence, files, size (bytes),
    cached (present and intact).

    >>> rows = list_sources()
    >>> rows[0]["name"], rows[0]["package"], rows[0]["files"]
    ('cgal-meshes', 'libcgal-demo', 154)
    """
    rows = []
    for src in SOURCES.values():
        rows.append({"name": src.name, "package": src.package, "versions": ", ".join(src.versions),
                     "description": src.description, "licence": src.licence, "files": len(src.files),
                     "size": src.size, "cached": not _problems(src, data_dir() / src.name),
                     "path": str(data_dir() / src.name)})
    return rows


# --- reading a .deb without dpkg ---------------------------------------------------------------------

class _Slice(io.RawIOBase):
    """A read-only window ``[offset, offset + size)`` of an open binary file."""

    def __init__(self, f: IO[bytes], offset: int, size: int):
        self._f, self._left = f, size
        f.seek(offset)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self._left)
        if n <= 0:
            return 0
        data = self._f.read(n)
        buffer[:len(data)] = data
        self._left -= len(data)
        return len(data)


def _ar_members(deb: Path) -> dict[str, tuple[int, int]]:
    """Members of an ``ar`` archive: name -> (offset of the data, size)."""
    members = {}
    with open(deb, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise DataError(f"{deb} is not a Debian package (.deb files are ar archives starting with "
                            "'!<arch>'); give the package's .deb file")
        while True:
            header = f.read(60)
            if not header:
                break
            if len(header) < 60 or header[58:60] != b"`\n":
                raise DataError(f"{deb} is a damaged ar archive (bad member header at byte {f.tell() - len(header)}); "
                                "download the .deb again")
            name = header[:16].decode("ascii", "replace").strip().rstrip("/")
            size = int(header[48:58].decode("ascii").strip())
            members[name] = (f.tell(), size)
            f.seek(size + (size % 2), os.SEEK_CUR)  # members are 2-byte aligned
    return members


@contextlib.contextmanager
def _member_tar(deb: Path, stem: str) -> Iterator[tarfile.TarFile]:
    """The ``control.tar.*`` or ``data.tar.*`` member of a .deb, opened as a streaming tar."""
    members = _ar_members(deb)
    names = [n for n in members if n.startswith(stem + ".tar")]
    if not names:
        raise DataError(f"{deb} has no {stem}.tar member (members: {', '.join(members)}); is it a .deb?")
    name = names[0]
    offset, size = members[name]
    with open(deb, "rb") as f:
        raw = io.BufferedReader(_Slice(f, offset, size), buffer_size=1 << 20)
        if name.endswith(".zst"):
            with _zstd_stream(deb, raw, stem) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
                yield tar
        else:  # tarfile reads gz, bz2, xz and plain tar by itself
            with tarfile.open(fileobj=raw, mode="r|*") as tar:
                yield tar


@contextlib.contextmanager
def _zstd_stream(deb: Path, raw: IO[bytes], stem: str) -> Iterator[IO[bytes]]:
    try:
        import zstandard
    except ImportError:
        zstandard = None
    if zstandard is not None:
        with zstandard.ZstdDecompressor().stream_reader(raw) as stream:
            yield stream
        return
    # Python's tarfile cannot read zstd before 3.14: dpkg-deb can, where it exists.
    dpkg = shutil.which("dpkg-deb")
    if dpkg is None:
        raise DataError(f"{deb} is compressed with zstd: `pip install zstandard` (or install dpkg) to read it")
    option = "--fsys-tarfile" if stem == "data" else "--ctrl-tarfile"
    proc = subprocess.Popen([dpkg, option, str(deb)], stdout=subprocess.PIPE)
    try:
        yield proc.stdout
    finally:
        proc.stdout.close()
        proc.wait()


def _clean(name: str) -> str:
    return name[2:] if name.startswith("./") else name.lstrip("/")


def deb_version(deb: str | Path) -> str:
    """The ``Version`` field of a ``.deb``'s control file."""
    with _member_tar(Path(deb), "control") as tar:
        for member in tar:
            if _clean(member.name) == "control" and member.isfile():
                for line in tar.extractfile(member).read().decode("utf-8", "replace").splitlines():
                    if line.startswith("Version:"):
                        return line.split(":", 1)[1].strip()
    raise DataError(f"{deb} has no Version in its control file; is it a .deb?")


def _copy_wanted(tar: tarfile.TarFile, prefix: str, wanted: set[str], dest: Path) -> None:
    """Write the regular files of ``tar`` whose path (below ``prefix``) is in ``wanted`` under ``dest``.
    Paths come from the declaration, never from the archive, so a hostile member cannot write elsewhere."""
    for member in tar:
        rel = _clean(member.name)
        if not member.isfile() or not rel.startswith(prefix) or rel[len(prefix):] not in wanted:
            continue
        out = dest / rel[len(prefix):]
        out.parent.mkdir(parents=True, exist_ok=True)
        with tar.extractfile(member) as fin, open(out, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)


def _extract(src: DataSource, deb: Path, dest: Path) -> None:
    """Unpack the declared files of ``src`` from ``deb`` into the (empty) folder ``dest``."""
    wanted = {rel for rel, _, _ in src.files}
    with _member_tar(deb, "data") as tar:
        if src.inner_archive is None:
            _copy_wanted(tar, src.prefix, wanted, dest)
            return
        inner = dest / ".inner-archive"
        for member in tar:
            if _clean(member.name) == src.inner_archive and member.isfile():
                with tar.extractfile(member) as fin, open(inner, "wb") as fout:
                    shutil.copyfileobj(fin, fout, 1 << 20)
                break
        else:
            raise DataVerificationError(f"{deb} has no {src.inner_archive}; it does not carry data set {src.name!r}")
    with tarfile.open(inner, mode="r:*") as tar:
        _copy_wanted(tar, src.prefix, wanted, dest)
    inner.unlink()


# --- download, manual steps ------------------------------------------------------------------------

def _manual_steps(src: DataSource, reason: str) -> str:
    target = data_dir() / src.name
    any_arch = "" if src.architecture == "all" else " (any architecture: the data files are the same)"
    where = src.prefix + (f" inside the package's {src.inner_archive}" if src.inner_archive else " in the package")
    return (
        f"cannot download data set {src.name!r}: {reason}.\n"
        f"Bring the Debian package {src.package} (known versions: {', '.join(src.versions)}) here by hand:\n"
        f"  1. get {src.deb_file_name()}{any_arch}: on a machine with Debian or Ubuntu package sources run\n"
        f"     `apt-get download {src.package}`, or take {src.pool_path()} from any Debian mirror;\n"
        f"  2. graphsphere data fetch {src.name} --deb /path/to/{src.deb_file_name()}\n"
        f"     (in Python: graphsphere.data.sources.fetch({src.name!r}, deb='/path/to/the.deb')).\n"
        f"Or put the {len(src.files)} files found below {where} into {target}/ yourself, keeping their "
        "relative paths (they are checked against their sha256 on use).")


def _apt_download(src: DataSource, folder: Path) -> Path:
    apt = shutil.which("apt-get")
    if apt is None:
        raise DataUnavailableError(_manual_steps(src, "apt-get is not available on this machine"))
    try:
        proc = subprocess.run([apt, "download", src.package], cwd=folder, capture_output=True, text=True,
                              timeout=900)
    except subprocess.TimeoutExpired:
        raise DataUnavailableError(_manual_steps(src, f"`apt-get download {src.package}` timed out")) from None
    debs = sorted(folder.glob(f"{src.package}_*.deb"))
    if proc.returncode != 0 or len(debs) != 1:
        said = " ".join((proc.stderr or proc.stdout or "").split())[-400:]
        hint = " (as root, `apt-get update` may fix an empty package list)" if "locate" in said else ""
        raise DataUnavailableError(_manual_steps(
            src, f"`apt-get download {src.package}` failed (exit {proc.returncode}): {said or 'no .deb came'}{hint}"))
    return debs[0]


# --- the cache ---------------------------------------------------------------------------------------

@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` held for the block (blocks while another process holds it)."""
    with open(path, "a+b") as f:
        if fcntl is not None:
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(f, fcntl.LOCK_UN)


def _remove_leftovers(root: Path, name: str) -> None:
    """Staging and old folders a killed fetch left behind (only called under the lock)."""
    for leftover in list(root.glob(f".{name}.partial-*")) + list(root.glob(f".{name}.old-*")):
        shutil.rmtree(leftover, ignore_errors=True)


def _install(staging: Path, target: Path) -> None:
    """Put the verified ``staging`` folder at ``target`` by renames: ``target`` is at every moment
    either absent, the old folder or the new one, never a mix."""
    if target.exists():
        old = staging.with_name(staging.name.replace(".partial-", ".old-"))
        os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, target)


def fetch(name: str | DataSource, deb: str | Path | None = None) -> Path:
    """The folder holding data set ``name``, downloading and unpacking its package if needed.

    Parameters
    ----------
    name : str or DataSource
        A name from :data:`SOURCES` (``graphsphere data list``), or a declaration.
    deb : path, optional
        A ``.deb`` of the package brought by hand (air-gapped machines); used instead of ``apt-get``.

    A cached copy is verified first and used if every checksum matches (``deb`` is then not read);
    otherwise the data set is fetched again. Raises :class:`DataUnavailableError` (with the manual steps) when the package
    cannot be downloaded, :class:`DataVerificationError` when its files differ from the recorded ones.

    >>> folder = fetch("ferret")                   # doctest: +SKIP
    >>> from scipy.io import netcdf_file            # doctest: +SKIP
    >>> netcdf_file(folder / "etopo60.cdf", mmap=False).variables["ROSE"].shape   # doctest: +SKIP
    (180, 360)
    """
    src = source(name)
    root = data_dir()
    target = root / src.name
    if not _problems(src, target):  # no lock needed to read: a read-only shared cache works as is
        return target
    root.mkdir(parents=True, exist_ok=True)
    with _lock(root / f".{src.name}.lock"):
        if not _problems(src, target):  # another process fetched it while this one waited
            return target
        _remove_leftovers(root, src.name)
        with tempfile.TemporaryDirectory(prefix=f"graphsphere-{src.name}-") as download:
            if deb is None:
                deb_path = _apt_download(src, Path(download))
            else:
                deb_path = Path(deb).expanduser()
                if not deb_path.is_file():
                    raise DataUnavailableError(_manual_steps(src, f"the given .deb {deb_path} does not exist"))
            staging = Path(tempfile.mkdtemp(prefix=f".{src.name}.partial-", dir=root))
            staging.chmod(0o755)  # mkdtemp makes it private; a shared cache must stay readable by others
            try:
                _extract(src, deb_path, staging)
                problems = _problems(src, staging)
                if problems:
                    version = deb_version(deb_path)
                    known = (f"version {version} is a known one, so the .deb is damaged or not the package's: "
                             "download it again" if version in src.versions else
                             f"version {version} is not one whose files are known ({', '.join(src.versions)}): "
                             f"use one of those ({src.pool_path()} in a Debian mirror)")
                    raise DataVerificationError(
                        f"{deb_path.name} does not hold data set {src.name!r} as recorded: {_summary(problems)}; "
                        f"{known}")
                _install(staging, target)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
    return target
