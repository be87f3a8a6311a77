"""`python -m recsys.data.download NAME`: fetch a GroupLens dataset (needs internet)."""

import argparse

from recsys.data.sources import DATASETS, GROUPLENS_URL, download


def main(argv=None) -> None:
    """Parse flags and download + verify + unpack one dataset."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("name", choices=sorted(DATASETS))
    parser.add_argument("--dest", default=None, help="parent folder (default: data/ in the repository)")
    parser.add_argument("--base-url", default=GROUPLENS_URL)
    args = parser.parse_args(argv)
    folder = download(args.name, args.dest, args.base_url)
    print(f"{args.name} ready in {folder}")


if __name__ == "__main__":
    main()
