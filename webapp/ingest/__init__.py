"""Getting pictures in: uploads, URL-list downloads, folders of class sub-folders."""
