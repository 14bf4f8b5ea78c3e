# mclust's model-based hierarchical clustering (hc) on public data sets: the reference
# merge sequences of tests/inference/test_hierarchical.py.
#
# Rerun (needs R and mclust: `apt-get install r-cran-mclust`), from the repository root,
# after scripts/mclust_reference.R has written the data sets:
#
#     Rscript scripts/mclust_hc_reference.R [FOLDER]
#
# For each tests/references/mclust/<dataset>.json (iris, faithful, diabetes, banknote,
# wreath) it reads the data and writes FOLDER/hc_<dataset>.json (default
# tests/references/mclust/) holding, for modelName in VVV, EII, VII, EEE and use in
# VARS, SVD (EEE on wreath: about 80 s each):
#   merges      hc()'s merge pairs, one [i, j] per stage (1-based labels of the initial
#               singletons; the union keeps the smaller label);
#   partitions  hclass() at G = 1..9, one row of n labels (1-based) per G.
# The data themselves stay in <dataset>.json (the "data" field).

suppressPackageStartupMessages(library(mclust))

args <- commandArgs(trailingOnly = TRUE)
folder <- if (length(args) >= 1) args[[1]] else file.path("tests", "references", "mclust")

read_data <- function(path) {
  text <- paste(readLines(path), collapse = "\n")
  body <- sub("^.*\"data\": \\[", "", text)
  body <- sub("\\]\\s*\\}\\s*$", "", body)
  rows <- regmatches(body, gregexpr("\\[[^]]*\\]", body))[[1]]
  do.call(rbind, lapply(rows, function(r) as.numeric(strsplit(gsub("[][ ]", "", r), ",")[[1]])))
}

json_ints <- function(x) paste0("[", paste(as.integer(x), collapse = ", "), "]")
json_rows <- function(m) paste0("[\n      ", paste(apply(m, 1, json_ints), collapse = ",\n      "), "\n    ]")

for (name in c("iris", "faithful", "diabetes", "banknote", "wreath")) {
  x <- read_data(file.path("tests", "references", "mclust", paste0(name, ".json")))
  entries <- c()
  for (model in c("VVV", "EII", "VII", "EEE")) for (use in c("VARS", "SVD")) {
    tree <- hc(x, modelName = model, use = use)
    merges <- t(unclass(tree)[1:2, , drop = FALSE])
    partitions <- t(hclass(tree, 1:9))
    entries <- c(entries, sprintf(
      "  \"%s_%s\": {\n    \"merges\": %s,\n    \"partitions\": %s\n  }",
      model, use, json_rows(merges), json_rows(partitions)
    ))
  }
  header <- sprintf(
    "  \"dataset\": \"%s\",\n  \"mclust_version\": \"%s\",\n  \"n\": %d,\n  \"d\": %d",
    name, as.character(packageVersion("mclust")), nrow(x), ncol(x)
  )
  path <- file.path(folder, paste0("hc_", name, ".json"))
  writeLines(paste0("{\n", header, ",\n", paste(entries, collapse = ",\n"), "\n}"), path)
  cat(sprintf("%s: n = %d, d = %d -> %s\n", name, nrow(x), ncol(x), path))
}
