"""``mill report``: a results directory as one self-contained HTML page (install ``mill-cli[report]``)."""
