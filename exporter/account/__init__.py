"""Stage 3, account: turn walks into numbers.

``links`` (unique/shared per tree, totals that count each inode once), ``contents`` (untracked,
copied and dedupable bytes by conda's records), ``delta`` (re-accounting trees after links elsewhere
changed), ``trees`` (one tree walked and accounted, as one task of a scan).
"""
