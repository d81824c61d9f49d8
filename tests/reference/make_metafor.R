# Reference values for tests/test_meta_stats.py, computed with R's metafor (and clubSandwich).
#
# Rerun (Debian/Ubuntu; the tests themselves only read the committed JSON and need no R):
#   apt-get update && apt-get install -y r-base-core r-cran-metafor r-cran-clubsandwich r-cran-jsonlite
#   Rscript tests/reference/make_metafor.R          # writes tests/reference/metafor.json
#
# Every iterative step runs with a tight tolerance (CTL below; confint/profile roots with CI_TOL), so
# the references are exact to ~1e-10 rather than to metafor's printing defaults (Fisher scoring stops
# at a tau^2 change < 1e-5, uniroot at ~1.2e-4). The JSON also carries the input data (effect sizes
# from escalc and the moderators), the model designs as R and as patsy formulas, and the versions.
suppressPackageStartupMessages({
  library(metafor)
  library(jsonlite)
})
has_cs <- requireNamespace("clubSandwich", quietly = TRUE)

args <- commandArgs(trailingOnly = FALSE)
here <- dirname(normalizePath(sub("^--file=", "", args[grep("^--file=", args)])))
out_file <- file.path(here, "metafor.json")

CTL <- list(threshold = 1e-13, tol = 1e-13, maxiter = 10000)  # rma.uni: Fisher scoring, uniroot (PM)
# rma.mv: nlminb's defaults (rel.tol 1e-10 on the log-likelihood) already agree with optim(BFGS,
# reltol 1e-14) to ~1e-8 relative on sigma^2; tighter rel.tol makes nlminb report non-convergence
# in the profile-likelihood refits of confint()
MV_CTL <- list(optimizer = "nlminb")
CI_TOL <- list(tol = 1e-12)  # confint: uniroot for Q-profile / profile-likelihood bounds

num <- function(x) if (is.null(x)) NA else unname(as.numeric(x))

# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------
bcg <- escalc(measure = "RR", ai = tpos, bi = tneg, ci = cpos, di = cneg, data = dat.bcg)
bcg <- data.frame(trial = bcg$trial, tpos = bcg$tpos, tneg = bcg$tneg, cpos = bcg$cpos, cneg = bcg$cneg,
                  ablat = bcg$ablat, year = bcg$year, alloc = bcg$alloc,
                  yi = as.numeric(bcg$yi), vi = as.numeric(bcg$vi))

raud <- dat.raudenbush1985
raud <- data.frame(study = raud$study, weeks = raud$weeks, weeks_c = pmin(raud$weeks, 3),
                   yi = as.numeric(raud$yi), vi = as.numeric(raud$vi))

kon <- dat.konstantopoulos2011
kon <- data.frame(district = kon$district, school = kon$school, study = kon$study, year = kon$year,
                  year_c = kon$year - mean(kon$year), yi = as.numeric(kon$yi), vi = as.numeric(kon$vi))

# CLASP trials (DerSimonian & Kacker 2007, as in metafor's test_analysis_example_dersimonian2007.r)
clasp <- data.frame(ai = c(5, 5, 12, 69, 9, 313), n1i = c(156, 303, 565, 1570, 103, 4659),
                    ci = c(8, 17, 9, 94, 11, 352), n2i = c(74, 303, 477, 1565, 105, 4650))
clasp <- cbind(clasp, summary(escalc(measure = "OR", ai = ai, n1i = n1i, ci = ci, n2i = n2i, data = clasp))[, c("yi", "vi")])
clasp$yi <- as.numeric(clasp$yi); clasp$vi <- as.numeric(clasp$vi)

egg <- escalc(measure = "OR", ai = ai, n1i = n1i, ci = ci, n2i = n2i, data = dat.egger2001)
egg <- data.frame(study = egg$study, ai = egg$ai, n1i = egg$n1i, ci = egg$ci, n2i = egg$n2i,
                  yi = as.numeric(egg$yi), vi = as.numeric(egg$vi))
egg15 <- egg[egg$study != "ISIS-4", ]  # regtest.html leaves out the mega-trial

datasets <- list(bcg = bcg, raudenbush1985 = raud, konstantopoulos2011 = kon, clasp = clasp,
                 egger2001 = egg, egger2001_no_isis4 = egg15)

# model designs: R formula and the same design in patsy (what cotbench's rma(mods=...) takes)
designs <- list(
  list(data = "bcg", r = NULL, py = NULL),
  list(data = "bcg", r = ~ ablat, py = "ablat"),
  list(data = "bcg", r = ~ ablat + year, py = "ablat + year"),
  list(data = "bcg", r = ~ factor(alloc), py = "C(alloc)"),
  list(data = "raudenbush1985", r = NULL, py = NULL),
  list(data = "raudenbush1985", r = ~ weeks_c, py = "weeks_c"),  # tau^2 hits 0 for most estimators
  list(data = "konstantopoulos2011", r = NULL, py = NULL),
  list(data = "konstantopoulos2011", r = ~ year_c, py = "year_c"),
  list(data = "clasp", r = NULL, py = NULL)  # k = 6; ML reaches the boundary
)
METHODS <- c("FE", "EE", "DL", "HE", "SJ", "PM", "ML", "REML")

# ------------------------------------------------------------------------------------------------
# helpers: the values of a fit
# ------------------------------------------------------------------------------------------------
coefs <- function(res) list(
  coef_names = rownames(res$beta), beta = num(res$beta), se = num(res$se), zval = num(res$zval),
  pval = num(res$pval), ci_lb = num(res$ci.lb), ci_ub = num(res$ci.ub), ddf = num(res$ddf))

pred_values <- function(pr) list(pred = num(pr$pred), se = num(pr$se), ci_lb = num(pr$ci.lb),
                                 ci_ub = num(pr$ci.ub), pi_lb = num(pr$pi.lb), pi_ub = num(pr$pi.ub))

newmods_for <- function(res) {
  if (res$int.only) return(NULL)
  colMeans(res$X[, -1, drop = FALSE]) + 0.5  # a point off the data's centre
}

uni_values <- function(res) {
  v <- c(coefs(res), list(
    k = res$k, p = res$p, tau2 = num(res$tau2), se_tau2 = num(res$se.tau2), I2 = num(res$I2),
    H2 = num(res$H2), QE = num(res$QE), QEp = num(res$QEp), QM = num(res$QM), QMdf = num(res$QMdf),
    QMp = num(res$QMp), R2 = num(res$R2)))
  nm <- newmods_for(res)
  v$newmods <- if (is.null(nm)) NULL else num(nm)
  v$predict <- pred_values(if (is.null(nm)) predict(res) else predict(res, newmods = nm))
  if (!is.element(res$method, c("FE", "EE"))) {
    ci <- confint(res, control = CI_TOL)$random
    v$confint <- list(tau2 = num(ci["tau^2", ]), tau = num(ci["tau", ]),
                      I2 = num(ci["I^2(%)", ]), H2 = num(ci["H^2", ]))
  }
  v
}

fit_uni <- function(d, method, test, mods = NULL, ...) {
  if (is.null(mods)) rma(yi, vi, data = d, method = method, test = test, control = CTL, ...)
  else rma(yi, vi, mods = mods, data = d, method = method, test = test, control = CTL, ...)
}

fstr <- function(f) if (is.null(f)) NULL else paste(deparse(f), collapse = "")

# ------------------------------------------------------------------------------------------------
# rma.uni: every estimator, with and without moderators, z and Knapp-Hartung
# ------------------------------------------------------------------------------------------------
rma_cases <- list()
for (des in designs) {
  for (method in METHODS) {
    for (test in c("z", "knha")) {
      res <- suppressWarnings(fit_uni(datasets[[des$data]], method, test, des$r))
      rma_cases[[length(rma_cases) + 1]] <- list(
        id = paste(des$data, if (is.null(des$py)) "1" else des$py, method, test, sep = "/"),
        data = des$data, mods_r = fstr(des$r), mods = des$py, method = method, test = test,
        values = uni_values(res))
    }
  }
}

# ------------------------------------------------------------------------------------------------
# rma.mv: three-level model (schools in districts), REML and ML, with and without a moderator
# ------------------------------------------------------------------------------------------------
mv_values <- function(res, with_ci) {
  v <- c(coefs(res), list(
    k = res$k, p = res$p, sigma2 = num(res$sigma2), nlvls = num(res$s.nlevels), logLik = num(logLik(res)),
    QE = num(res$QE), QEp = num(res$QEp), QM = num(res$QM), QMdf = num(res$QMdf), QMp = num(res$QMp)))
  nm <- newmods_for(res)
  v$newmods <- if (is.null(nm)) NULL else num(nm)
  v$predict <- pred_values(if (is.null(nm)) predict(res) else predict(res, newmods = nm))
  if (with_ci) {
    ci <- confint(res, control = CI_TOL)
    v$confint <- lapply(ci[seq_len(length(res$sigma2))], function(cc) num(cc$random[1, ]))
    names(v$confint) <- NULL
  }
  v
}

mv_cases <- list()
for (method in c("REML", "ML")) {
  for (mods in list(NULL, ~ year_c)) {
    for (test in c("z", "t")) {
      res <- if (is.null(mods)) {
        rma.mv(yi, vi, random = ~ 1 | district/school, data = kon, method = method, test = test, control = MV_CTL)
      } else {
        rma.mv(yi, vi, mods = mods, random = ~ 1 | district/school, data = kon, method = method, test = test,
               control = MV_CTL)
      }
      mv_cases[[length(mv_cases) + 1]] <- list(
        id = paste("konstantopoulos2011", if (is.null(mods)) "1" else "year_c", method, test, sep = "/"),
        data = "konstantopoulos2011", random = "~ 1 | district/school", mods_r = fstr(mods),
        mods = if (is.null(mods)) NULL else "year_c", method = method, test = test,
        values = mv_values(res, with_ci = test == "z"))
    }
  }
}

# ------------------------------------------------------------------------------------------------
# cluster-robust inference: metafor's robust() (CR1, adjust = TRUE) and clubSandwich CR2
# ------------------------------------------------------------------------------------------------
rob_values <- function(r) list(
  beta = num(r$beta), se = num(r$se), tval = num(r$zval), df = num(rep_len(r$dfs, length(r$beta))),
  pval = num(r$pval), ci_lb = num(r$ci.lb), ci_ub = num(r$ci.ub), QM = num(r$QM), QMdf = num(r$QMdf),
  QMp = num(r$QMp))

robust_cases <- list()
add_robust <- function(id, fit, spec, cluster_col) {
  cl <- datasets[[spec$data]][[cluster_col]]
  for (type in c("CR1", if (has_cs) "CR2")) {
    r <- robust(fit, cluster = cl, adjust = TRUE, clubSandwich = type == "CR2")
    robust_cases[[length(robust_cases) + 1]] <<- c(spec, list(
      id = paste(id, type, sep = "/"), cluster = cluster_col, type = type, values = rob_values(r)))
  }
}
for (mods in list(NULL, ~ ablat)) {
  spec <- list(model = "rma", data = "bcg", mods_r = fstr(mods), mods = if (is.null(mods)) NULL else "ablat",
               method = "REML")
  add_robust(paste("bcg", if (is.null(mods)) "1" else "ablat", "REML", sep = "/"),
             fit_uni(bcg, "REML", "z", mods), spec, "trial")
}
for (mods in list(NULL, ~ year_c)) {
  mname <- if (is.null(mods)) NULL else "year_c"
  spec <- list(model = "rma", data = "konstantopoulos2011", mods_r = fstr(mods), mods = mname, method = "REML")
  add_robust(paste("konstantopoulos2011", if (is.null(mods)) "1" else "year_c", "REML", "uni", sep = "/"),
             fit_uni(kon, "REML", "z", mods), spec, "district")
  fit <- if (is.null(mods)) {
    rma.mv(yi, vi, random = ~ 1 | district/school, data = kon, control = MV_CTL)
  } else {
    rma.mv(yi, vi, mods = mods, random = ~ 1 | district/school, data = kon, control = MV_CTL)
  }
  spec <- list(model = "rma_mv", data = "konstantopoulos2011", random = "~ 1 | district/school",
               mods_r = fstr(mods), mods = mname, method = "REML")
  add_robust(paste("konstantopoulos2011", if (is.null(mods)) "1" else "year_c", "REML", "mv", sep = "/"),
             fit, spec, "district")
}

# ------------------------------------------------------------------------------------------------
# small-study effects: regtest (Egger), trimfill (L0, R0), leave1out
# ------------------------------------------------------------------------------------------------
regtest_cases <- list()
for (dname in c("egger2001_no_isis4", "egger2001", "bcg")) {
  d <- datasets[[dname]]
  for (model in c("lm", "rma")) {
    for (method in if (model == "lm") "FE" else c("REML", "DL")) {
      rt <- regtest(fit_uni(d, if (model == "lm") "FE" else method, "z"), model = model)
      slope <- if (model == "lm") coef(rt$fit)[2] else rt$fit$beta[2]
      regtest_cases[[length(regtest_cases) + 1]] <- list(
        id = paste(dname, model, method, sep = "/"), data = dname, model = model,
        method = if (model == "lm") NULL else method,
        values = list(stat = num(rt$zval), pval = num(rt$pval), df = num(rt$dfs), slope = num(slope),
                      limit = num(rt$est), limit_ci = c(num(rt$ci.lb), num(rt$ci.ub))))
    }
  }
}

trimfill_cases <- list()
for (dname in c("bcg", "egger2001_no_isis4")) {
  for (method in c("EE", "DL", "REML")) {
    for (estimator in c("L0", "R0")) {
      fit <- fit_uni(datasets[[dname]], method, "z")
      tf <- trimfill(fit, estimator = estimator, control = CTL)
      v <- c(coefs(tf), list(k = tf$k, k0 = tf$k0, se_k0 = num(tf$se.k0), side = tf$side, p_k0 = num(tf$p.k0),
                             tau2 = num(tf$tau2), se_tau2 = num(tf$se.tau2), QE = num(tf$QE),
                             yi_filled = num(tf$yi[tf$fill]), vi_filled = num(tf$vi[tf$fill])))
      trimfill_cases[[length(trimfill_cases) + 1]] <- list(
        id = paste(dname, method, estimator, sep = "/"), data = dname, method = method, estimator = estimator,
        values = v)
    }
  }
}

loo_cases <- list()
for (dname in c("bcg", "konstantopoulos2011")) {
  for (method in c("EE", "DL", "REML")) {
    l1 <- leave1out(fit_uni(datasets[[dname]], method, "z"))
    loo_cases[[length(loo_cases) + 1]] <- list(
      id = paste(dname, method, sep = "/"), data = dname, method = method,
      values = list(estimate = num(l1$estimate), se = num(l1$se), zval = num(l1$zval), pval = num(l1$pval),
                    ci_lb = num(l1$ci.lb), ci_ub = num(l1$ci.ub), QE = num(l1$Q), QEp = num(l1$Qp),
                    tau2 = num(l1$tau2), I2 = num(l1$I2), H2 = num(l1$H2)))
  }
}

# subgroups: a separate fit per level, then an equal-effects model of the subgroup estimates (Q-between)
subgroup_cases <- list()
for (method in c("REML", "DL")) {
  lv <- sort(unique(bcg$alloc))
  fits <- lapply(lv, function(l) fit_uni(bcg[bcg$alloc == l, ], method, "z"))
  est <- sapply(fits, function(f) c(f$beta)); se <- sapply(fits, function(f) f$se)
  qb <- rma(est, sei = se, method = "EE")
  subgroup_cases[[length(subgroup_cases) + 1]] <- list(
    id = paste("bcg", "alloc", method, sep = "/"), data = "bcg", groups = "alloc", method = method,
    values = list(group = lv, k = sapply(fits, function(f) f$k), estimate = num(est), se = num(se),
                  ci_lb = sapply(fits, function(f) f$ci.lb), ci_ub = sapply(fits, function(f) f$ci.ub),
                  tau2 = sapply(fits, function(f) f$tau2), QE = sapply(fits, function(f) f$QE),
                  Q_between = num(qb$QE), df = num(qb$k - 1), p = num(qb$QEp)))
}

# ------------------------------------------------------------------------------------------------
# write
# ------------------------------------------------------------------------------------------------
out <- list(
  meta = list(
    generated_by = "tests/reference/make_metafor.R",
    R = R.version.string, metafor = as.character(packageVersion("metafor")),
    metadat = as.character(packageVersion("metadat")),
    clubSandwich = if (has_cs) as.character(packageVersion("clubSandwich")) else NULL,
    control_rma = CTL, control_rma_mv = MV_CTL, control_confint = CI_TOL,
    notes = c("escalc: measure RR for bcg, OR for clasp and egger2001; raudenbush1985 and konstantopoulos2011 carry yi/vi",
              "newmods: column means of the moderators + 0.5 (intercept-only fits: none)",
              "robust CR1: metafor robust(adjust = TRUE); CR2: robust(clubSandwich = TRUE), Satterthwaite df")),
  data = lapply(datasets, as.list),
  rma = rma_cases, rma_mv = mv_cases, robust = robust_cases, regtest = regtest_cases,
  trimfill = trimfill_cases, leave1out = loo_cases, subgroups = subgroup_cases)
# auto_unbox writes length-1 vectors as scalars; the tests read every numeric field as an array
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, na = "null", null = "null", pretty = 1), out_file)
cat("wrote", out_file, ":", length(rma_cases), "rma,", length(mv_cases), "rma.mv,", length(robust_cases),
    "robust,", length(regtest_cases), "regtest,", length(trimfill_cases), "trimfill,", length(loo_cases),
    "leave1out,", length(subgroup_cases), "subgroups cases\n")
