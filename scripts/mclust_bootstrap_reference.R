# mclust's bootstrap likelihood-ratio test for the number of components
# (mclustBootstrapLRT): the reference numbers of tests/gaussmix/test_bootstrap.py.
#
# Rerun (needs R and mclust: `apt-get install r-cran-mclust` on Debian/Ubuntu, or
# `install.packages("mclust")`), from the repository root:
#
#     Rscript scripts/mclust_bootstrap_reference.R [OUTPUT_FOLDER] [NBOOT]
#
# It writes OUTPUT_FOLDER/bootstrap_<name>.json (default tests/references/mclust/,
# NBOOT 999) for three cases: faithful (VVV, maxG = 3), iris (EEE, maxG = 3) and a
# simulated set of three spherical clusters of 50 points in 2-D (EII, maxG = 3: the
# known K is 3), each holding:
#   data            the (n, d) data set itself;
#   model, max_G, nboot, seed    the call: set.seed(seed); mclustBootstrapLRT(data,
#                   modelName = model, maxG = max_G, nboot = nboot);
#   obs, p_value    mclust's observed LRTS and bootstrap p-values, one per g = 1 .. max_G;
#   boot            the (nboot, max_G) bootstrap LRTS (mclust redraws failed replicates);
#   fits            mclust's fits with K = 1 .. max_G + 1 components, the H0 and H1 of
#                   the tests (summary(mclustBIC(...), G = K): hierarchical start, EM tol
#                   1e-5): pro (K), mean (K, d), sigma (K, d, d), loglik;
#   seconds         the elapsed time of mclustBootstrapLRT on the machine that wrote it.
# Numbers are written with 17 significant digits (exact doubles).

suppressPackageStartupMessages(library(mclust))

args <- commandArgs(trailingOnly = TRUE)
output <- if (length(args) >= 1) args[[1]] else file.path("tests", "references", "mclust")
nboot <- if (length(args) >= 2) as.integer(args[[2]]) else 999L
dir.create(output, recursive = TRUE, showWarnings = FALSE)

json_number <- function(x) {
  ifelse(is.na(x) | !is.finite(x), "null", sprintf("%.17g", x))
}
json_string <- function(x) paste0("\"", gsub("\"", "\\\\\"", x), "\"")
json_vector <- function(x, fmt = json_number) paste0("[", paste(fmt(x), collapse = ", "), "]")
json_matrix <- function(m, fmt = json_number) {
  rows <- vapply(seq_len(nrow(m)), function(i) json_vector(m[i, ], fmt), "")
  paste0("[\n    ", paste(rows, collapse = ",\n    "), "\n  ]")
}
json_object <- function(fields) {
  body <- paste0(json_string(names(fields)), ": ", unlist(fields), collapse = ",\n  ")
  paste0("{\n  ", body, "\n}")
}

simulated <- function() {
  set.seed(1)
  centres <- rbind(c(0, 0), c(4, 0), c(2, 3.5))
  rows <- lapply(1:3, function(k) {
    cbind(rnorm(50, centres[k, 1]), rnorm(50, centres[k, 2]))
  })
  data <- do.call(rbind, rows)
  colnames(data) <- c("x1", "x2")
  data
}

cases <- list(
  faithful = list(data = as.matrix(datasets::faithful), model = "VVV",
                  source = "R datasets::faithful"),
  iris = list(data = as.matrix(datasets::iris[, 1:4]), model = "EEE",
              source = "R datasets::iris[, 1:4]"),
  simulated = list(data = simulated(), model = "EII",
                   source = paste("set.seed(1); 50 points each of N((0, 0), I),",
                                  "N((4, 0), I), N((2, 3.5), I)"))
)
max_G <- 3
seed <- 0

one_fit <- function(bic, data, g, model) {
  fit <- summary(bic, data, G = g, modelNames = model)
  d <- ncol(data)
  sigma <- array(fit$parameters$variance$sigma, dim = c(d, d, g))
  sigma_json <- paste0(
    "[", paste(vapply(seq_len(g), function(k) json_matrix(sigma[, , k]), ""), collapse = ", "),
    "]"
  )
  json_object(list(
    pro = json_vector(fit$parameters$pro),
    mean = json_matrix(t(matrix(fit$parameters$mean, nrow = d))),
    sigma = sigma_json,
    loglik = json_number(fit$loglik)
  ))
}

for (name in names(cases)) {
  case <- cases[[name]]
  data <- case$data
  bic <- mclustBIC(data, G = seq_len(max_G + 1), modelNames = case$model, verbose = FALSE)
  fits <- vapply(seq_len(max_G + 1), function(g) one_fit(bic, data, g, case$model), "")
  set.seed(seed)
  seconds <- system.time(
    test <- mclustBootstrapLRT(data, modelName = case$model, maxG = max_G, nboot = nboot,
                               verbose = FALSE)
  )[["elapsed"]]
  record <- json_object(list(
    dataset = json_string(name),
    source = json_string(case$source),
    mclust_version = json_string(as.character(packageVersion("mclust"))),
    r_version = json_string(paste(R.version$major, R.version$minor, sep = ".")),
    model = json_string(case$model),
    max_G = json_number(max_G),
    nboot = json_number(nboot),
    seed = json_number(seed),
    obs = json_vector(test$obs),
    p_value = json_vector(test$p.value),
    boot = json_matrix(test$boot),
    fits = paste0("[", paste(fits, collapse = ",\n"), "]"),
    seconds = json_number(seconds),
    n = json_number(nrow(data)),
    d = json_number(ncol(data)),
    data = json_matrix(data)
  ))
  path <- file.path(output, paste0("bootstrap_", name, ".json"))
  writeLines(record, path)
  cat(sprintf("%s (%s): LRTS %s, p %s, %.1f s -> %s\n", name, case$model,
              paste(signif(test$obs, 6), collapse = " "),
              paste(test$p.value, collapse = " "), seconds, path))
}
