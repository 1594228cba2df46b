"""``shiwu tag``: recognised labels written as keywords where photo tools read them (XMP
sidecars, or embedded XMP and IPTC), merged with the keywords already there, never losing a byte."""

from .exiftool_session import ExifTool, ExifToolMissing, MetadataError
from .journal import Journal
from .keywords import ROOT, Keywords, merge, remove
from .tagger import TagRow, TagSettings, labels_of, tag_photos
from .writes import FileState, TagWriteError, sidecar_path, write_embedded, write_sidecar

__all__ = ["ExifTool", "ExifToolMissing", "MetadataError", "Journal", "ROOT", "Keywords", "merge",
           "remove", "TagRow", "TagSettings", "labels_of", "tag_photos", "FileState", "TagWriteError",
           "sidecar_path", "write_embedded", "write_sidecar"]
