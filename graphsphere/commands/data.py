"""``graphsphere data``: the real data sets that ship in Debian packages (list, fetch, verify, path).

    graphsphere data list
    graphsphere data fetch cgal-meshes
    graphsphere data fetch cgal-meshes --deb ~/Downloads/libcgal-demo_5.5.1-2_all.deb
    graphsphere data verify ferret
    graphsphere data path fields-stations

A data set that cannot be had or does not verify prints one ``error: ...`` message (with the manual
steps where apt-get cannot help) and exits with status 2, as every command does; ``--debug`` raises.
"""

from __future__ import annotations

import sys


def _fail(args, error: BaseException) -> int:
    if getattr(args, "debug", False):
        raise error
    print(f"error: {error.args[0] if isinstance(error, KeyError) else error}", file=sys.stderr)
    return 2


def _list(args) -> int:
    from graphsphere.data import sources

    print(f"data folder: {sources.data_dir()}")
    for row in sources.list_sources():
        state = "cached" if row["cached"] else "not fetched"
        print(f"\n{row['name']}  ({state}; {row['files']} files, {row['size'] / 1e6:.1f} MB)")
        print(f"  package:     {row['package']} {row['versions']}")
        print(f"  description: {row['description']}")
        print(f"  licence:     {row['licence']}")
    return 0


def _fetch(args) -> int:
    from graphsphere.data import sources

    try:
        src = sources.source(args.name)
        print(f"fetching {src.name} from {args.deb or 'the Debian package ' + src.package} "
              f"({len(src.files)} files, {src.size / 1e6:.1f} MB) unless already cached...", file=sys.stderr)
        folder = sources.fetch(src, deb=args.deb)
    except (sources.DataError, KeyError) as e:
        return _fail(args, e)
    print(folder)
    return 0


def _verify(args) -> int:
    from graphsphere.data import sources

    try:
        folder = sources.verify(args.name)
    except (sources.DataError, KeyError) as e:
        return _fail(args, e)
    print(f"{args.name}: all {len(sources.source(args.name).files)} files match their checksums in {folder}")
    return 0


def _path(args) -> int:
    from graphsphere.data import sources

    try:
        folder = sources.verify(args.name)
    except (sources.DataError, KeyError) as e:
        return _fail(args, e)
    print(folder)
    return 0


def register(sub) -> None:
    p = sub.add_parser("data", help="real data sets from Debian packages: list, fetch, verify, path",
                       description="Real data sets that ship in Debian packages, fetched with apt-get download "
                                   "(no root) or from a .deb you bring, verified by sha256, cached in "
                                   "$GRAPHSPHERE_DATA (default ~/.cache/graphsphere/data).")
    actions = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    actions.add_parser("list", help="the data sets, their packages, licences, sizes, and whether cached"
                       ).set_defaults(func=_list)
    f = actions.add_parser("fetch", help="download, verify and cache a data set")
    f.add_argument("name", help="data set name (see `graphsphere data list`)")
    f.add_argument("--deb", metavar="FILE", help="use this .deb of the package instead of apt-get (offline machines)")
    f.set_defaults(func=_fetch)
    v = actions.add_parser("verify", help="check a cached data set against its checksums")
    v.add_argument("name")
    v.set_defaults(func=_verify)
    q = actions.add_parser("path", help="print the folder of a fetched and intact data set")
    q.add_argument("name")
    q.set_defaults(func=_path)
