# mclust's noise component (Banfield & Raftery 1993) on faithful with uniform noise added:
# the reference numbers of tests/gaussmix/test_background.py (GaussianMixture's
# background="uniform" against R's mclust).
#
# Rerun (needs R and mclust: `apt-get install r-cran-mclust`), from the repository root:
#
#     Rscript scripts/mclust_noise_reference.R [OUTPUT_FILE]
#
# It writes OUTPUT_FILE (default tests/references/mclust/noise_faithful.json) holding:
#   data         (n, 2): R's datasets::faithful (272 rows) then 40 points drawn uniformly
#                in faithful's bounding box (set.seed(19)), so the box is faithful's;
#   noise        (n,) TRUE for the 40 added rows: mclust's initialization=list(noise=...);
#   Vinv         1 / the volume of the data's axis-aligned bounding box (passed to Mclust;
#                mclust's default hypvol() would take the smaller of that box and the box
#                of the principal components);
#   fits         per model and G: Mclust(data, G, modelName, initialization =
#                list(noise = noise), Vinv = Vinv)'s pro (G + 1, the noise's last), mean
#                (G, d), sigma (G, d, d), its reported loglik and bic (mclust's sign,
#                higher is better), df = nMclustParams(model, d, G, noise = TRUE), and
#                loglik_at: estep() at the returned parameters (mclust reports the
#                log-likelihood of the E-step before its last M-step); tight_pro and
#                tight_loglik: the same fit with emControl(tol = c(1e-12, 1e-12)), EM run
#                to convergence (mclust's default tol 1e-5 stops the slow noise EM early).
# Numbers are written with 17 significant digits (exact doubles).

suppressPackageStartupMessages(library(mclust))

args <- commandArgs(trailingOnly = TRUE)
output <- if (length(args) >= 1) args[[1]] else
  file.path("tests", "references", "mclust", "noise_faithful.json")

json_number <- function(x) ifelse(is.na(x) | !is.finite(x), "null", sprintf("%.17g", x))
json_vector <- function(x) paste0("[", paste(json_number(x), collapse = ", "), "]")
json_matrix <- function(m) {
  paste0("[", paste(vapply(seq_len(nrow(m)), function(i) json_vector(m[i, ]), ""),
                    collapse = ", "), "]")
}
json_object <- function(fields) {
  paste0("{", paste0("\"", names(fields), "\": ", unlist(fields), collapse = ", "), "}")
}

set.seed(19)
faithful_data <- as.matrix(datasets::faithful)
n_noise <- 40
lower <- apply(faithful_data, 2, min)
upper <- apply(faithful_data, 2, max)
added <- cbind(runif(n_noise, lower[1], upper[1]), runif(n_noise, lower[2], upper[2]))
data <- rbind(faithful_data, added)
noise <- c(rep(FALSE, nrow(faithful_data)), rep(TRUE, n_noise))
Vinv <- 1 / prod(apply(data, 2, function(column) diff(range(column))))
d <- ncol(data)

models <- c("VVV", "EEE", "VVI", "VII", "EEV", "VEV", "EII", "VEI")
fits <- c()
for (model in models) {
  for (g in 2:3) {
    fit <- Mclust(data, G = g, modelNames = model, initialization = list(noise = noise),
                  Vinv = Vinv, verbose = FALSE)
    if (is.null(fit)) next
    p <- fit$parameters
    sigma <- p$variance$sigma  # (d, d, G)
    sigmas <- paste0("[", paste(vapply(seq_len(g), function(k) json_matrix(sigma[, , k]), ""),
                                collapse = ", "), "]")
    loglik_at <- estep(data = data, modelName = model, parameters = p)$loglik
    # the same from the same start, EM run to convergence (mclust's default tol is 1e-5)
    tight <- Mclust(data, G = g, modelNames = model, initialization = list(noise = noise),
                    Vinv = Vinv, verbose = FALSE,
                    control = emControl(tol = c(1e-12, 1e-12), itmax = c(1e6, 1e6)))
    fields <- list(
      model = paste0("\"", model, "\""), G = g,
      pro = json_vector(p$pro), mean = json_matrix(t(matrix(p$mean, nrow = d))),
      sigma = sigmas, loglik = json_number(fit$loglik), bic = json_number(fit$bic),
      df = nMclustParams(model, d, g, noise = TRUE), loglik_at = json_number(loglik_at),
      tight_pro = json_vector(tight$parameters$pro), tight_loglik = json_number(tight$loglik)
    )
    fits <- c(fits, json_object(fields))
  }
}

text <- paste0(
  "{\n\"source\": \"R datasets::faithful + 40 uniform points in its box, set.seed(19); ",
  "mclust ", packageVersion("mclust"), "\",\n",
  "\"Vinv\": ", json_number(Vinv), ",\n",
  "\"noise\": [", paste(ifelse(noise, "true", "false"), collapse = ", "), "],\n",
  "\"data\": ", json_matrix(data), ",\n",
  "\"fits\": [\n", paste(fits, collapse = ",\n"), "\n]\n}\n"
)
writeLines(text, output)
