# mclust's BIC and ICL tables on public data sets: the reference numbers of
# tests/gaussmix/test_mclust_references.py (gaussmix's model selection against R's mclust).
#
# Rerun (needs R and mclust: `apt-get install r-cran-mclust` on Debian/Ubuntu, or
# `install.packages("mclust")`), from the repository root:
#
#     Rscript scripts/mclust_reference.R [OUTPUT_FOLDER]
#
# It writes OUTPUT_FOLDER/<dataset>.json (default tests/references/mclust/) for iris,
# faithful (R's datasets) and diabetes, banknote, wreath (mclust's own), each holding:
#   data            the (n, d) data set itself, so Python reads exactly what mclust fitted;
#   models, G       mclust's 14 model names (mclust.options("emModelNames")) and K = 1..9;
#   bic, icl        mclustBIC() and mclustICL() tables, [K][model], null where mclust fails
#                   (mclust's sign: 2 log L - p log n, HIGHER is better; scikit-learn's and
#                   gaussmix's BIC is minus this);
#   return_codes    mclustBIC's codes per cell (0 fine, -1 singular covariance, -2 a mixing
#                   proportion fell to zero, -3 EM did not converge, ...);
#   n_parameters    nMclustParams(model, d, K): mclust's free-parameter counts;
#   loglik          (bic + n_parameters log n) / 2: the log-likelihood of each cell's fit;
#   fits            for VVV, EEE, VVI and VII (gaussmix's full, tied, diag, spherical) and
#                   every K: mclust's fitted pro (K), mean (K, d), sigma (K, d, d), its
#                   reported log-likelihood, BIC and ICL (icl.Mclust), and the same three
#                   recomputed by mclust at those returned parameters (loglik_at, bic_at,
#                   icl_at: dens(), estep(), bic(), icl.Mclust()). mclust reports the
#                   log-likelihood and responsibilities of the E-step BEFORE its last
#                   M-step, i.e. of the previous iterate (up to ~2e-3 lower here), so only
#                   the recomputed values belong to the returned parameters.
# All fits use mclust's defaults (hierarchical "hc" start on the VVV model, EM tol 1e-5).
# Numbers are written with 17 significant digits (exact doubles).

suppressPackageStartupMessages(library(mclust))

args <- commandArgs(trailingOnly = TRUE)
output <- if (length(args) >= 1) args[[1]] else file.path("tests", "references", "mclust")
dir.create(output, recursive = TRUE, showWarnings = FALSE)

# ---- a minimal JSON writer (no dependency beyond base R and mclust) -----------------

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

# ---- the data sets ------------------------------------------------------------------

datasets <- list(
  iris = list(data = as.matrix(datasets::iris[, 1:4]), source = "R datasets::iris[, 1:4]"),
  faithful = list(data = as.matrix(datasets::faithful), source = "R datasets::faithful"),
  diabetes = list(
    data = as.matrix(mclust::diabetes[, c("glucose", "insulin", "sspg")]),
    source = "mclust::diabetes[, c(\"glucose\", \"insulin\", \"sspg\")]"
  ),
  banknote = list(data = as.matrix(mclust::banknote[, -1]), source = "mclust::banknote[, -1]"),
  wreath = list(data = as.matrix(mclust::wreath), source = "mclust::wreath")
)

G <- 1:9
models <- mclust.options("emModelNames")
fitted_models <- c("VVV", "EEE", "VVI", "VII")

one_fit <- function(bic, data, g, model) {
  # mclust's own fit of one cell (summary of the BIC table re-runs that cell's EM).
  fit <- suppressWarnings(summary(bic, data, G = g, modelNames = model))
  if (is.null(fit) || is.null(fit$parameters$variance$sigma)) return("null")
  parameters <- fit$parameters
  d <- ncol(data)
  means <- matrix(parameters$mean, nrow = d)  # (d, K)
  sigma <- array(parameters$variance$sigma, dim = c(d, d, g))
  sigma_json <- paste0(
    "[",
    paste(vapply(seq_len(g), function(k) json_matrix(sigma[, , k]), ""), collapse = ", "),
    "]"
  )
  # mclust's numbers at the returned parameters (its own are the previous iterate's).
  loglik_at <- sum(log(dens(data = data, modelName = model, parameters = parameters)))
  z_at <- estep(data = data, modelName = model, parameters = parameters)$z
  bic_at <- bic(model, loglik_at, nrow(data), d, g)
  icl_at <- mclust:::icl.Mclust(list(n = nrow(data), z = z_at, bic = bic_at))
  json_object(list(
    pro = json_vector(parameters$pro),
    mean = json_matrix(t(means)),
    sigma = sigma_json,
    loglik = json_number(fit$loglik),
    bic = json_number(fit$bic),
    icl = json_number(mclust:::icl.Mclust(fit)),
    loglik_at = json_number(loglik_at),
    bic_at = json_number(bic_at),
    icl_at = json_number(icl_at)
  ))
}

for (name in names(datasets)) {
  data <- datasets[[name]]$data
  n <- nrow(data)
  d <- ncol(data)
  set.seed(0)
  bic <- mclustBIC(data, G = G, modelNames = models, verbose = FALSE)
  icl_table <- mclustICL(data, G = G, modelNames = models, verbose = FALSE)
  bic_values <- matrix(as.numeric(bic[, models]), nrow = length(G))
  icl_values <- matrix(as.numeric(icl_table[, models]), nrow = length(G))
  codes <- attr(bic, "returnCodes")[, models]
  n_parameters <- outer(G, models, Vectorize(function(g, m) nMclustParams(m, d, g)))
  loglik <- (bic_values + n_parameters * log(n)) / 2
  fits <- list()
  for (model in fitted_models) {
    cells <- vapply(G, function(g) {
      if (is.na(bic[g, model])) "null" else one_fit(bic, data, g, model)
    }, "")
    fits[[model]] <- paste0("[", paste(cells, collapse = ",\n"), "]")
  }
  fits_json <- paste0(
    "{", paste0(json_string(names(fits)), ": ", unlist(fits), collapse = ",\n"), "}"
  )
  record <- json_object(list(
    dataset = json_string(name),
    source = json_string(datasets[[name]]$source),
    mclust_version = json_string(as.character(packageVersion("mclust"))),
    r_version = json_string(paste(R.version$major, R.version$minor, sep = ".")),
    sign = json_string("mclust's: 2 log L - p log n, higher is better"),
    n = json_number(n),
    d = json_number(d),
    columns = json_vector(colnames(data), json_string),
    models = json_vector(models, json_string),
    G = json_vector(G),
    bic = json_matrix(bic_values),
    icl = json_matrix(icl_values),
    return_codes = json_matrix(codes),
    n_parameters = json_matrix(n_parameters),
    loglik = json_matrix(loglik),
    fits = fits_json,
    data = json_matrix(data)
  ))
  path <- file.path(output, paste0(name, ".json"))
  writeLines(record, path)
  cat(sprintf("%s: n = %d, d = %d -> %s\n", name, n, d, path))
}
