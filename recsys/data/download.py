"""`python -m recsys.data.download NAME`: fetch a data set (needs internet).

MovieLens comes from GroupLens; Amazon Beauty and Games from the published raw files, preprocessed as the paper
does into the CSV form the app and training read.
"""

import argparse
import sys

from recsys.data.errors import one_line
from recsys.data.sources import DATASETS, GROUPLENS_URL, download


def main(argv=None) -> None:
    """Parse flags and download one data set; says plainly when its files cannot be reached (exit status 1)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=sorted(DATASETS))
    parser.add_argument("--dest", default=None, help="parent folder (default: data/ in the repository)")
    parser.add_argument("--base-url", default=None,
                        help=f"a mirror of the published files (default: {GROUPLENS_URL} for MovieLens, "
                             "the Amazon data's own addresses)")
    args = parser.parse_args(argv)
    try:
        folder = download(args.name, args.dest, args.base_url)
    except OSError as error:  # urllib's URLError and HTTPError are OSErrors
        sys.exit(f"{args.name}: the files cannot be reached from this machine ({one_line(error)}). "
                 "Download them where there is internet, then pass their folder with --data-dir.")
    print(f"{args.name} ready in {folder}")


if __name__ == "__main__":
    main()
