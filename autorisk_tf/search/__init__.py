"""Similar-user search: which accounts behave like this one (`python -m autorisk_tf.search`).

`UserIndex` (faiss) holds user embeddings by key, with add, replace and remove;
`read_embeddings` reads what `autorisk_tf.embed` and `beam.embed` write. See
`autorisk_tf/search/__main__.py` for the command line.
"""

from autorisk_tf.search.embeddings import read_embeddings
from autorisk_tf.search.index import KINDS, METRICS, SearchError, UserIndex, choose_kind

__all__ = ["KINDS", "METRICS", "SearchError", "UserIndex", "choose_kind", "read_embeddings"]
